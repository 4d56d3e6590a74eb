-- A worker claims and finishes many sessions at once: one round trip for what its sessions
-- ask within the same moment, instead of one each (a round trip costs the worker more CPU
-- than the statement's own work).

-- The claims of many jobs, each exactly as hes_begin and in a transaction of its own (so no
-- claim holds another's locks: a cell's row is taken by every claim in it, and claims held
-- together would wait on each other across workers). Element i of every o_ array answers
-- claim i; a claim that raised has o_status 'error' and o_error '<SQLSTATE> <message>',
-- and the others go on.
CREATE PROCEDURE hes_begin_batch(p_campaign bigint[], p_meter bigint[], p_holder text[], p_lease double precision[],
                                 p_block integer[], p_throttle boolean[], p_slot integer[], p_slot_token bigint[],
                                 p_max_claims integer[],
                                 INOUT o_status text[], INOUT o_job_state text[], INOUT o_cell text[],
                                 INOUT o_slot integer[], INOUT o_slot_token bigint[], INOUT o_wait double precision[],
                                 INOUT o_token bigint[], INOUT o_key_generation integer[], INOUT o_tx_top bigint[],
                                 INOUT o_rx_last bigint[], INOUT o_error text[])
LANGUAGE plpgsql AS $$
DECLARE
    r record;
BEGIN
    o_status := '{}'; o_job_state := '{}'; o_cell := '{}'; o_slot := '{}'; o_slot_token := '{}'; o_wait := '{}';
    o_token := '{}'; o_key_generation := '{}'; o_tx_top := '{}'; o_rx_last := '{}'; o_error := '{}';
    FOR i IN 1 .. coalesce(cardinality(p_meter), 0) LOOP
        BEGIN
            SELECT * INTO r FROM hes_begin(p_campaign[i], p_meter[i], p_holder[i], p_lease[i], p_block[i],
                                           p_throttle[i], p_slot[i], p_slot_token[i], p_max_claims[i]);
            o_status := o_status || r.status; o_job_state := o_job_state || r.job_state;
            o_cell := o_cell || r.cell; o_slot := o_slot || r.slot; o_slot_token := o_slot_token || r.slot_token;
            o_wait := o_wait || r.wait; o_token := o_token || r.token; o_key_generation := o_key_generation || r.key_generation;
            o_tx_top := o_tx_top || r.tx_top; o_rx_last := o_rx_last || r.rx_last; o_error := o_error || NULL::text;
        EXCEPTION WHEN OTHERS THEN
            o_status := o_status || 'error'::text; o_job_state := o_job_state || NULL::text;
            o_cell := o_cell || NULL::text; o_slot := o_slot || NULL::integer;
            o_slot_token := o_slot_token || NULL::bigint; o_wait := o_wait || NULL::double precision;
            o_token := o_token || NULL::bigint; o_key_generation := o_key_generation || NULL::integer;
            o_tx_top := o_tx_top || NULL::bigint; o_rx_last := o_rx_last || NULL::bigint;
            o_error := o_error || (SQLSTATE || ' ' || SQLERRM);
        END;
        COMMIT;
    END LOOP;
END $$;

-- The outcomes of many sessions in one transaction, each exactly as hes_finish (with its
-- events when it was stored). p_sessions is a JSON array with one object per session:
--   meter, token, campaign, holder, cell, slot, slot_token, received, rx_last, key_generation,
--   capabilities, and arrays of rows: series [source, obis, attribute, scaler, unit, scaled],
--   readings [series (1-based index into series), time, raw, quality], marks [profile, time],
--   events [log, time, code]; every time in microseconds since the Unix epoch.
-- One JSON text rather than arrays of each column: the worker's driver checks every element
-- of an array parameter on its own, which cost more than the statement. Returns hes_finish's
-- answer for each session. The sessions are of different meters, each under its own lease, so
-- no two batches wait on each other; the caller runs a batch that fails (one session's data)
-- again one session at a time.
CREATE FUNCTION hes_epoch_us(p_us text) RETURNS timestamptz
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT 'epoch'::timestamptz + p_us::bigint * interval '1 microsecond' $$;

CREATE FUNCTION hes_finish_batch(p_sessions jsonb)
RETURNS integer[]
LANGUAGE plpgsql AS $$
DECLARE
    s jsonb;
    v_stored integer;
    v_result integer[] := '{}';
    v_source text[]; v_obis text[]; v_attribute smallint[]; v_scaler smallint[]; v_unit smallint[];
    v_scaled boolean[];
    v_series integer[]; v_time timestamptz[]; v_raw bigint[]; v_quality smallint[];
    v_mark_profile text[]; v_mark_time timestamptz[];
BEGIN
    FOR s IN SELECT x FROM jsonb_array_elements(p_sessions) WITH ORDINALITY AS e(x, n) ORDER BY n LOOP
        SELECT coalesce(array_agg(x->>0 ORDER BY n), '{}'), coalesce(array_agg(x->>1 ORDER BY n), '{}'),
               coalesce(array_agg((x->>2)::smallint ORDER BY n), '{}'),
               coalesce(array_agg((x->>3)::smallint ORDER BY n), '{}'),
               coalesce(array_agg((x->>4)::smallint ORDER BY n), '{}'),
               coalesce(array_agg((x->>5)::boolean ORDER BY n), '{}')
          INTO v_source, v_obis, v_attribute, v_scaler, v_unit, v_scaled
          FROM jsonb_array_elements(s->'series') WITH ORDINALITY AS e(x, n);
        SELECT coalesce(array_agg((x->>0)::integer ORDER BY n), '{}'),
               coalesce(array_agg(hes_epoch_us(x->>1) ORDER BY n), '{}'),
               coalesce(array_agg((x->>2)::bigint ORDER BY n), '{}'),
               coalesce(array_agg((x->>3)::smallint ORDER BY n), '{}')
          INTO v_series, v_time, v_raw, v_quality
          FROM jsonb_array_elements(s->'readings') WITH ORDINALITY AS e(x, n);
        SELECT coalesce(array_agg(x->>0 ORDER BY n), '{}'), coalesce(array_agg(hes_epoch_us(x->>1) ORDER BY n), '{}')
          INTO v_mark_profile, v_mark_time
          FROM jsonb_array_elements(s->'marks') WITH ORDINALITY AS e(x, n);
        v_stored := hes_finish((s->>'meter')::bigint, (s->>'token')::bigint, (s->>'campaign')::bigint, s->>'holder',
                               s->>'cell', (s->>'slot')::integer, (s->>'slot_token')::bigint,
                               v_source, v_obis, v_attribute, v_scaler, v_unit, v_scaled,
                               v_series, v_time, v_raw, v_quality, hes_epoch_us(s->>'received'),
                               v_mark_profile, v_mark_time, (s->>'rx_last')::bigint, (s->>'key_generation')::integer,
                               nullif(s->'capabilities', 'null'::jsonb));
        IF v_stored >= 0 AND jsonb_array_length(s->'events') > 0 THEN
            INSERT INTO event (meter_id, log, time, code, received)
            SELECT (s->>'meter')::bigint, x->>0, hes_epoch_us(x->>1), (x->>2)::integer, hes_epoch_us(s->>'received')
              FROM jsonb_array_elements(s->'events') AS x
            ON CONFLICT DO NOTHING;
        END IF;
        v_result := v_result || v_stored;
    END LOOP;
    RETURN v_result;
END $$;

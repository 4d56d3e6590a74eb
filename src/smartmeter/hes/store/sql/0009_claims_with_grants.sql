-- A claim granted comes back with what its session needs of the meter (address, marks, keys,
-- what is left of the lease) in the same round trip: before, the worker fetched that with a
-- second statement after the claims, a round trip and a wait more for every job.
--
-- o_grant[i] is NULL unless claim i was granted; else a JSON object: the meter's columns
-- (system_title hex), marks {profile: last time}, keys [[kind, state, wrapped hex,
-- generation]] (the unicast keys of the generation whose counters the claim reserved, NEW
-- ones, and the other ACTIVE keys), lease_left in seconds. It is read in the claim's own
-- transaction, so it is the data the claim was granted on.
DROP PROCEDURE hes_begin_batch(bigint[], bigint[], text[], double precision[], integer[], boolean[], integer[],
                               bigint[], integer[], text[], text[], text[], integer[], bigint[],
                               double precision[], bigint[], integer[], bigint[], bigint[], text[]);

CREATE FUNCTION hes_grant_data(p_meter bigint, p_generation integer) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'id', m.id, 'serial', m.serial, 'system_title', encode(m.system_title, 'hex'), 'host', m.host,
        'port', m.port, 'cell', m.cell, 'client_sap', m.client_sap, 'server_sap', m.server_sap,
        'mechanism', m.mechanism, 'suite', m.suite, 'policy', m.policy, 'capabilities', m.capabilities,
        'marks', (SELECT coalesce(jsonb_object_agg(profile, last_time), '{}'::jsonb)
                  FROM profile_mark WHERE meter_id = m.id),
        'keys', (SELECT coalesce(jsonb_agg(jsonb_build_array(kind, state, encode(wrapped, 'hex'), generation)),
                                 '[]'::jsonb)
                 FROM meter_key
                 WHERE meter_id = m.id AND (state = 'NEW' OR (kind IN ('ek', 'ak') AND generation = p_generation)
                                            OR (kind NOT IN ('ek', 'ak') AND state = 'ACTIVE'))),
        'lease_left', (SELECT extract(epoch FROM l.expires - clock_timestamp())::float8
                       FROM meter_lease l WHERE l.meter_id = m.id))
    FROM meter m WHERE m.id = p_meter
$$;

-- As in 0008, each claim in a transaction of its own; a claim that raised has o_status
-- 'error' and o_error '<SQLSTATE> <message>'.
CREATE PROCEDURE hes_begin_batch(p_campaign bigint[], p_meter bigint[], p_holder text[], p_lease double precision[],
                                 p_block integer[], p_throttle boolean[], p_slot integer[], p_slot_token bigint[],
                                 p_max_claims integer[],
                                 INOUT o_status text[], INOUT o_job_state text[], INOUT o_cell text[],
                                 INOUT o_slot integer[], INOUT o_slot_token bigint[], INOUT o_wait double precision[],
                                 INOUT o_token bigint[], INOUT o_key_generation integer[], INOUT o_tx_top bigint[],
                                 INOUT o_rx_last bigint[], INOUT o_grant jsonb[], INOUT o_error text[])
LANGUAGE plpgsql AS $$
DECLARE
    r record;
    v_grant jsonb;
BEGIN
    o_status := '{}'; o_job_state := '{}'; o_cell := '{}'; o_slot := '{}'; o_slot_token := '{}'; o_wait := '{}';
    o_token := '{}'; o_key_generation := '{}'; o_tx_top := '{}'; o_rx_last := '{}'; o_grant := '{}'; o_error := '{}';
    FOR i IN 1 .. coalesce(cardinality(p_meter), 0) LOOP
        BEGIN
            SELECT * INTO r FROM hes_begin(p_campaign[i], p_meter[i], p_holder[i], p_lease[i], p_block[i],
                                           p_throttle[i], p_slot[i], p_slot_token[i], p_max_claims[i]);
            v_grant := CASE WHEN r.status = 'granted' THEN hes_grant_data(p_meter[i], r.key_generation) END;
            o_status := o_status || r.status; o_job_state := o_job_state || r.job_state;
            o_cell := o_cell || r.cell; o_slot := o_slot || r.slot; o_slot_token := o_slot_token || r.slot_token;
            o_wait := o_wait || r.wait; o_token := o_token || r.token; o_key_generation := o_key_generation || r.key_generation;
            o_tx_top := o_tx_top || r.tx_top; o_rx_last := o_rx_last || r.rx_last; o_grant := o_grant || v_grant;
            o_error := o_error || NULL::text;
        EXCEPTION WHEN OTHERS THEN
            o_status := o_status || 'error'::text; o_job_state := o_job_state || NULL::text;
            o_cell := o_cell || NULL::text; o_slot := o_slot || NULL::integer;
            o_slot_token := o_slot_token || NULL::bigint; o_wait := o_wait || NULL::double precision;
            o_token := o_token || NULL::bigint; o_key_generation := o_key_generation || NULL::integer;
            o_tx_top := o_tx_top || NULL::bigint; o_rx_last := o_rx_last || NULL::bigint;
            o_grant := o_grant || NULL::jsonb; o_error := o_error || (SQLSTATE || ' ' || SQLERRM);
        END;
        COMMIT;
    END LOOP;
END $$;

-- Statistics for the cells' slots (FleetStore._analyze_slots keeps them after each change):
-- without them a claim reads and sorts every slot of its cell to find the lowest free one.
ANALYZE cell, cell_slot;

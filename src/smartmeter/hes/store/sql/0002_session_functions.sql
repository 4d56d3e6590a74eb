-- A worker's session in two round trips: hes_begin claims, hes_finish stores. Each runs in
-- the caller's one statement, so it is one transaction.

-- Claim for one job: the job must still be open, the meter's lease free (or expired), then
-- with p_throttle a session slot of the meter's cell and a new-connection token of the cell;
-- then a block of invocation counters is reserved. status is one of
--   'granted'   everything taken: lease token, slot and its token, counter block
--               (tx_top − block + 1 .. tx_top) of unicast key generation key_generation
--   'closed'    the job already has its outcome (job_state; null when there is no such job)
--   'busy'      another session's lease is valid
--   'cell_full' no session slot free in the cell
--   'throttled' no connection token yet: try again after wait seconds, passing the slot and
--               its token back (p_slot, p_slot_token): the slot is kept meanwhile
--   'exhausted' the counters would pass 2^32 − 1
--   'poison'    the job was claimed p_max_claims times and never ended: it is failed here
-- What a claim took is given back when it goes no further. Without a campaign (p_campaign
-- null) there is no job; without p_throttle no slot and no token are taken.
CREATE FUNCTION hes_begin(p_campaign bigint, p_meter bigint, p_holder text, p_lease double precision,
                          p_block integer, p_throttle boolean, p_slot integer, p_slot_token bigint,
                          p_max_claims integer)
RETURNS TABLE (status text, job_state text, cell text, slot integer, slot_token bigint, wait double precision,
               token bigint, key_generation integer, tx_top bigint, rx_last bigint)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_now timestamptz := clock_timestamp();
    v_cell text;
    v_state text;
    v_claims integer;
    v_slot integer;
    v_slot_token bigint;
    v_available double precision;
    v_rate double precision;
    v_token bigint;
    v_generation integer;
    v_top bigint;
    v_rx bigint;
BEGIN
    IF p_campaign IS NULL THEN
        SELECT 'queued', m.cell, 0 INTO v_state, v_cell, v_claims FROM meter m WHERE m.id = p_meter;
    ELSE
        SELECT j.state, m.cell, j.claims INTO v_state, v_cell, v_claims
          FROM job j JOIN meter m ON m.id = j.meter_id
         WHERE j.campaign_id = p_campaign AND j.meter_id = p_meter FOR UPDATE OF j;
    END IF;
    IF v_state IS DISTINCT FROM 'queued' THEN
        RETURN QUERY SELECT 'closed', v_state, v_cell, NULL::integer, NULL::bigint, NULL::double precision,
                            NULL::bigint, NULL::integer, NULL::bigint, NULL::bigint;
        RETURN;
    END IF;
    IF p_campaign IS NOT NULL AND p_max_claims IS NOT NULL AND v_claims >= p_max_claims THEN
        UPDATE job j SET state = 'failed', finished = now(), worker = p_holder,
                         error = format('begun %s times, never ended (a worker died with it each time: a poison job?)',
                                        v_claims)
         WHERE j.campaign_id = p_campaign AND j.meter_id = p_meter;
        RETURN QUERY SELECT 'poison', 'failed', v_cell, NULL::integer, NULL::bigint, NULL::double precision,
                            NULL::bigint, NULL::integer, NULL::bigint, NULL::bigint;
        RETURN;
    END IF;
    -- the lease first: a claim that cannot have the meter takes no slot and no token
    INSERT INTO meter_lease AS l (meter_id, holder, token, expires)
    VALUES (p_meter, p_holder, nextval('lease_token'), v_now + make_interval(secs => p_lease))
    ON CONFLICT (meter_id) DO UPDATE SET holder = excluded.holder, token = excluded.token, expires = excluded.expires
     WHERE l.expires < v_now
    RETURNING l.token INTO v_token;
    IF v_token IS NULL THEN
        RETURN QUERY SELECT 'busy', v_state, v_cell, NULL::integer, NULL::bigint, NULL::double precision,
                            NULL::bigint, NULL::integer, NULL::bigint, NULL::bigint;
        RETURN;
    END IF;
    IF p_throttle THEN
        IF p_slot IS NOT NULL THEN  -- the slot kept while throttled, if it is still ours
            UPDATE cell_slot s SET expires = v_now + make_interval(secs => p_lease)
             WHERE s.cell = v_cell AND s.slot = p_slot AND s.token = p_slot_token AND s.expires >= v_now
            RETURNING s.slot, s.token INTO v_slot, v_slot_token;
        END IF;
        IF v_slot IS NULL THEN
            UPDATE cell_slot s SET holder = p_holder, token = nextval('lease_token'),
                                   expires = v_now + make_interval(secs => p_lease)
             WHERE (s.cell, s.slot) = (SELECT c.cell, c.slot FROM cell_slot c
                                        WHERE c.cell = v_cell AND (c.holder IS NULL OR c.expires < v_now)
                                        ORDER BY c.slot LIMIT 1 FOR UPDATE SKIP LOCKED)
            RETURNING s.slot, s.token INTO v_slot, v_slot_token;
        END IF;
        IF v_slot IS NULL THEN
            DELETE FROM meter_lease l WHERE l.meter_id = p_meter AND l.token = v_token;
            RETURN QUERY SELECT 'cell_full', v_state, v_cell, NULL::integer, NULL::bigint, NULL::double precision,
                                NULL::bigint, NULL::integer, NULL::bigint, NULL::bigint;
            RETURN;
        END IF;
        SELECT LEAST(c.burst, c.tokens + extract(epoch FROM (v_now - c.refilled)) * c.connects_per_s),
               c.connects_per_s
          INTO v_available, v_rate FROM cell c WHERE c.name = v_cell FOR UPDATE;
        IF v_available IS NOT NULL THEN
            UPDATE cell c SET tokens = CASE WHEN v_available >= 1 THEN v_available - 1 ELSE v_available END,
                              refilled = v_now
             WHERE c.name = v_cell;
            IF v_available < 1 THEN
                DELETE FROM meter_lease l WHERE l.meter_id = p_meter AND l.token = v_token;
                RETURN QUERY SELECT 'throttled', v_state, v_cell, v_slot, v_slot_token, (1 - v_available) / v_rate,
                                    NULL::bigint, NULL::integer, NULL::bigint, NULL::bigint;
                RETURN;
            END IF;
        END IF;
    END IF;
    SELECT k.generation INTO v_generation FROM meter_key k
     WHERE k.meter_id = p_meter AND k.kind = 'ek' AND k.state = 'ACTIVE';
    v_generation := coalesce(v_generation, 1);
    INSERT INTO frame_counter AS f (meter_id, key_generation, tx_reserved) VALUES (p_meter, v_generation, p_block)
    ON CONFLICT (meter_id, key_generation) DO UPDATE SET tx_reserved = f.tx_reserved + p_block
     WHERE f.tx_reserved + p_block <= 4294967295
    RETURNING f.tx_reserved, f.rx_last INTO v_top, v_rx;
    IF v_top IS NULL THEN
        DELETE FROM meter_lease l WHERE l.meter_id = p_meter AND l.token = v_token;
        UPDATE cell_slot s SET holder = NULL, token = NULL, expires = NULL
         WHERE s.cell = v_cell AND s.slot = v_slot AND s.token = v_slot_token;
        RETURN QUERY SELECT 'exhausted', v_state, v_cell, NULL::integer, NULL::bigint, NULL::double precision,
                            NULL::bigint, NULL::integer, NULL::bigint, NULL::bigint;
        RETURN;
    END IF;
    IF p_campaign IS NOT NULL THEN
        UPDATE job j SET claims = j.claims + 1 WHERE j.campaign_id = p_campaign AND j.meter_id = p_meter;
    END IF;
    RETURN QUERY SELECT 'granted', v_state, v_cell, v_slot, v_slot_token, 0::double precision, v_token, v_generation,
                        v_top, v_rx;
END $$;

-- Give back a lease and a slot (each only if the token is still the one given).
CREATE FUNCTION hes_release(p_meter bigint, p_token bigint, p_cell text, p_slot integer, p_slot_token bigint)
RETURNS void
LANGUAGE sql AS $$
    DELETE FROM meter_lease WHERE meter_id = p_meter AND token = p_token;
    UPDATE cell_slot SET holder = NULL, token = NULL, expires = NULL
     WHERE cell = p_cell AND slot = p_slot AND token = p_slot_token;
$$;

-- Store a session's readings, marks, counter and outcome, give back its lease and slot.
-- Returns the readings newly stored, −1 if the lease was lost (nothing is stored then), −2
-- if the job already had its outcome (nothing is stored, the lease is given back).
CREATE FUNCTION hes_finish(p_meter bigint, p_token bigint, p_campaign bigint, p_holder text,
                           p_cell text, p_slot integer, p_slot_token bigint,
                           p_source text[], p_obis text[], p_attribute smallint[], p_scaler smallint[],
                           p_unit smallint[], p_scaled boolean[],
                           p_series integer[], p_time timestamptz[], p_raw bigint[], p_quality smallint[],
                           p_received timestamptz,
                           p_mark_profile text[], p_mark_time timestamptz[],
                           p_rx_last bigint, p_key_generation integer, p_capabilities jsonb)
RETURNS integer
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_token bigint;
    v_state text;
    v_stored integer := 0;
BEGIN
    UPDATE cell_slot SET holder = NULL, token = NULL, expires = NULL
     WHERE cell = p_cell AND slot = p_slot AND token = p_slot_token;
    SELECT token INTO v_token FROM meter_lease WHERE meter_id = p_meter FOR UPDATE;
    IF v_token IS DISTINCT FROM p_token THEN
        RETURN -1;
    END IF;
    IF p_campaign IS NOT NULL THEN
        SELECT state INTO v_state FROM job WHERE campaign_id = p_campaign AND meter_id = p_meter FOR UPDATE;
        IF v_state IS DISTINCT FROM 'queued' THEN
            DELETE FROM meter_lease WHERE meter_id = p_meter AND token = p_token;
            RETURN -2;
        END IF;
    END IF;
    IF cardinality(p_source) > 0 THEN
        INSERT INTO series (meter_id, source, obis, attribute, scaler, unit)
        SELECT p_meter, s, o, a, coalesce(sc, 0), coalesce(u, 255)
          FROM unnest(p_source, p_obis, p_attribute, p_scaler, p_unit) AS x(s, o, a, sc, u)
        ON CONFLICT (meter_id, source, obis, attribute) DO NOTHING;
        UPDATE series SET scaler = x.sc, unit = x.u
          FROM unnest(p_source, p_obis, p_attribute, p_scaler, p_unit, p_scaled) AS x(s, o, a, sc, u, known)
         WHERE series.meter_id = p_meter AND series.source = x.s AND series.obis = x.o AND series.attribute = x.a
           AND x.known AND (series.scaler, series.unit) <> (x.sc, x.u);
        -- p_series: for each reading, the index (1-based) of its series in the p_source.. arrays
        WITH ids AS (
            SELECT ord, s.id FROM unnest(p_source, p_obis, p_attribute) WITH ORDINALITY AS x(src, o, a, ord)
            JOIN series s ON s.meter_id = p_meter AND s.source = x.src AND s.obis = x.o AND s.attribute = x.a)
        INSERT INTO reading (series_id, time, raw, quality, received)
        SELECT ids.id, r.t, r.v, r.q, p_received
          FROM unnest(p_series, p_time, p_raw, p_quality) AS r(si, t, v, q) JOIN ids ON ids.ord = r.si
        ON CONFLICT DO NOTHING;
        GET DIAGNOSTICS v_stored = ROW_COUNT;
    END IF;
    INSERT INTO profile_mark AS pm (meter_id, profile, last_time)
    SELECT p_meter, p, t FROM unnest(p_mark_profile, p_mark_time) AS x(p, t)
    ON CONFLICT (meter_id, profile) DO UPDATE SET last_time = GREATEST(pm.last_time, excluded.last_time);
    IF p_rx_last IS NOT NULL THEN
        UPDATE frame_counter SET rx_last = GREATEST(coalesce(rx_last, 0), p_rx_last)
         WHERE meter_id = p_meter AND key_generation = p_key_generation;
    END IF;
    IF p_capabilities IS NOT NULL THEN
        UPDATE meter SET capabilities = capabilities || p_capabilities WHERE id = p_meter;
    END IF;
    IF p_campaign IS NOT NULL THEN
        UPDATE job SET state = 'done', rows = v_stored, error = NULL, worker = p_holder, finished = now(),
                       attempts = attempts + 1
         WHERE campaign_id = p_campaign AND meter_id = p_meter;
    END IF;
    DELETE FROM meter_lease WHERE meter_id = p_meter AND token = p_token;
    RETURN v_stored;
END $$;

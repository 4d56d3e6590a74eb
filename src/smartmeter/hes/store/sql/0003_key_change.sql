-- Key changes of the meters' global unicast keys (EK and AK), crash-safe:
--   hes_key_new      the new keys are written as generation g' state NEW (wrapped), with the
--                    first block of g' counters reserved, before the meter is told;
--   hes_key_promote  once the meter uses them: NEW → ACTIVE, the ACTIVE ones → EXPIRED, one
--                    transaction; the new generation's counters are its own (frame_counter);
--   hes_key_discard  the meter still holds the ACTIVE keys: NEW → EXPIRED (never used; kept,
--                    so a generation number is never given twice).
-- Each is fenced by the meter's lease token: a holder whose lease expired changes nothing.

-- Generation g' (above every key and counter generation of the meter) as NEW, with counters
-- 1 .. p_block of it reserved. No row when the lease is not the caller's or a NEW is there.
CREATE FUNCTION hes_key_new(p_meter bigint, p_token bigint, p_kinds text[], p_wrapped bytea[], p_block integer)
RETURNS TABLE (generation integer, tx_top bigint)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_token bigint;
    v_generation integer;
BEGIN
    SELECT l.token INTO v_token FROM meter_lease l WHERE l.meter_id = p_meter FOR UPDATE;
    IF v_token IS DISTINCT FROM p_token
       OR EXISTS (SELECT 1 FROM meter_key k WHERE k.meter_id = p_meter AND k.state = 'NEW') THEN
        RETURN;
    END IF;
    SELECT GREATEST((SELECT max(k.generation) FROM meter_key k WHERE k.meter_id = p_meter),
                    (SELECT max(f.key_generation) FROM frame_counter f WHERE f.meter_id = p_meter), 0) + 1
      INTO v_generation;
    INSERT INTO meter_key (meter_id, kind, generation, state, wrapped)
    SELECT p_meter, x.kind, v_generation, 'NEW', x.wrapped FROM unnest(p_kinds, p_wrapped) AS x(kind, wrapped);
    INSERT INTO frame_counter (meter_id, key_generation, tx_reserved) VALUES (p_meter, v_generation, p_block);
    RETURN QUERY SELECT v_generation, p_block::bigint;
END $$;

-- NEW generation p_generation → ACTIVE, the ACTIVE keys of its kinds → EXPIRED; p_rx_last is
-- the highest counter the meter sent under it. Returns 1 when promoted, 0 when it already
-- was ACTIVE (a repeated call), −1 when the lease is not the caller's, −3 when generation
-- p_generation is neither NEW nor ACTIVE (discarded meanwhile).
CREATE FUNCTION hes_key_promote(p_meter bigint, p_token bigint, p_generation integer, p_rx_last bigint)
RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    v_token bigint;
    v_kinds text[];
BEGIN
    SELECT token INTO v_token FROM meter_lease WHERE meter_id = p_meter FOR UPDATE;
    IF v_token IS DISTINCT FROM p_token THEN
        RETURN -1;
    END IF;
    SELECT array_agg(kind) INTO v_kinds FROM meter_key
     WHERE meter_id = p_meter AND generation = p_generation AND state = 'NEW';
    IF v_kinds IS NULL THEN
        RETURN CASE WHEN EXISTS (SELECT 1 FROM meter_key WHERE meter_id = p_meter AND generation = p_generation
                                                           AND state = 'ACTIVE') THEN 0 ELSE -3 END;
    END IF;
    UPDATE meter_key SET state = 'EXPIRED', changed = now()
     WHERE meter_id = p_meter AND kind = ANY(v_kinds) AND state = 'ACTIVE';
    UPDATE meter_key SET state = 'ACTIVE', changed = now()
     WHERE meter_id = p_meter AND generation = p_generation AND state = 'NEW';
    IF p_rx_last IS NOT NULL THEN
        UPDATE frame_counter SET rx_last = GREATEST(coalesce(rx_last, 0), p_rx_last)
         WHERE meter_id = p_meter AND key_generation = p_generation;
    END IF;
    RETURN 1;
END $$;

-- NEW generation p_generation → EXPIRED (the meter holds the ACTIVE keys). false when the
-- lease is not the caller's or there is no such NEW generation.
CREATE FUNCTION hes_key_discard(p_meter bigint, p_token bigint, p_generation integer)
RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    v_token bigint;
BEGIN
    SELECT token INTO v_token FROM meter_lease WHERE meter_id = p_meter FOR UPDATE;
    IF v_token IS DISTINCT FROM p_token THEN
        RETURN false;
    END IF;
    UPDATE meter_key SET state = 'EXPIRED', changed = now()
     WHERE meter_id = p_meter AND generation = p_generation AND state = 'NEW';
    RETURN FOUND;
END $$;

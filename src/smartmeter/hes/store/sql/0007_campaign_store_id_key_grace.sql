-- The store id a campaign was created under: the id its jobs' messages carry. A store whose
-- own id changed (restored into a database made afresh) still knows those jobs for its own,
-- while the jobs of another installation sharing the broker, whose campaign and meter numbers
-- may well be the same, carry that installation's id and stay foreign (worker.py, _job_owner).
CREATE FUNCTION hes_store_id() RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT convert_from(value, 'UTF8') FROM setting WHERE name = 'store_id'
$$;
ALTER TABLE campaign ADD COLUMN store_id text NOT NULL DEFAULT hes_store_id();

-- Pushes under keys a key change replaced (state EXPIRED) are taken for this many seconds
-- after the change, for pushes made before it and still on their way; later ones are refused
-- as under wrong keys (FleetStore.push_key_rows). Change it with
--   UPDATE setting SET value = convert_to('3600', 'UTF8') WHERE name = 'expired_key_grace';
INSERT INTO setting (name, value) VALUES ('expired_key_grace', convert_to('86400', 'UTF8'))
ON CONFLICT (name) DO NOTHING;

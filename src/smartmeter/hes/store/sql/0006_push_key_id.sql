-- A meter starts its invocation counter again when its unicast key changes (a key change by
-- `hes keys change`, or any other): after the change, (system title, invocation counter) names
-- a push already stored under the old key. The key a push was made under is part of its
-- identity: key_id is a fingerprint of the encryption key its tag verified with ('' for a push
-- no key of the store fits), so the same counter under a new key is a new push.
ALTER TABLE raw_push ADD COLUMN key_id text NOT NULL DEFAULT '';
ALTER TABLE raw_push DROP CONSTRAINT raw_push_pkey;
ALTER TABLE raw_push ADD PRIMARY KEY (system_title, key_id, invocation_counter);

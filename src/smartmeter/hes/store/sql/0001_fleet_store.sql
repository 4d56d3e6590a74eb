-- The head-end's fleet store (PostgreSQL). One migration per file, applied in order, each
-- in its own transaction; schema_migration records what is applied.

-- Settings of the store as a whole. kek_check: a known value wrapped under the
-- key-encryption key of the first import, so a process with another KEK is refused at start
-- instead of failing every meter.
CREATE TABLE setting (
    name   text PRIMARY KEY,
    value  bytea NOT NULL
);
-- store_id: this store's own name in the message ids it publishes, so that the jobs of another
-- store (or of this one restored from a backup) are never taken for duplicates of its own
INSERT INTO setting (name, value) VALUES ('store_id', convert_to(gen_random_uuid()::text, 'UTF8'));

-- Meters and what the head-end learnt of them.
CREATE TABLE meter (
    id            bigserial PRIMARY KEY,
    system_title  bytea NOT NULL UNIQUE CHECK (length(system_title) = 8),
    serial        text NOT NULL UNIQUE,
    host          text NOT NULL,
    port          integer NOT NULL CHECK (port BETWEEN 1 AND 65535),
    client_sap    smallint NOT NULL DEFAULT 1,
    server_sap    smallint NOT NULL DEFAULT 1,
    cell          text NOT NULL DEFAULT 'default',
    mechanism     smallint NOT NULL DEFAULT 5,
    suite         smallint NOT NULL DEFAULT 0,
    policy        smallint NOT NULL DEFAULT 0,
    -- what the meter showed it can do, e.g. {"profile_selection": "entry"}: a refused range
    -- selection is remembered so later reads start with what works
    capabilities  jsonb NOT NULL DEFAULT '{}'::jsonb,
    created       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX meter_by_cell ON meter (cell);

-- Keys, wrapped at rest (RFC 3394 under the store's key-encryption key). A change is
-- written NEW before the meter is told, made ACTIVE when the meter confirmed it, and the
-- key it replaces becomes EXPIRED in the same transaction.
CREATE TABLE meter_key (
    meter_id    bigint NOT NULL REFERENCES meter(id) ON DELETE CASCADE,
    kind        text NOT NULL CHECK (kind IN ('ek', 'ak', 'master', 'hls_secret')),
    generation  integer NOT NULL,
    state       text NOT NULL CHECK (state IN ('NEW', 'ACTIVE', 'EXPIRED')),
    wrapped     bytea NOT NULL,
    created     timestamptz NOT NULL DEFAULT now(),
    changed     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (meter_id, kind, generation)
);
CREATE UNIQUE INDEX meter_key_one_active ON meter_key (meter_id, kind) WHERE state = 'ACTIVE';
CREATE UNIQUE INDEX meter_key_one_new ON meter_key (meter_id, kind) WHERE state = 'NEW';

-- Invocation counters per meter and unicast-key generation. tx_reserved is the top of the
-- last block handed to a session: every counter at or below it may have been used, so the
-- next block starts above it (a crash leaves a gap, never a reuse). rx_last is the highest
-- counter accepted from the meter; both only ever move up.
CREATE TABLE frame_counter (
    meter_id        bigint NOT NULL REFERENCES meter(id) ON DELETE CASCADE,
    key_generation  integer NOT NULL,
    tx_reserved     bigint NOT NULL DEFAULT 0 CHECK (tx_reserved BETWEEN 0 AND 4294967295),
    rx_last         bigint CHECK (rx_last BETWEEN 0 AND 4294967295),
    PRIMARY KEY (meter_id, key_generation)
);

-- One session per meter at a time, across all workers. token fences a holder whose lease
-- expired: its results are refused.
CREATE SEQUENCE lease_token;
CREATE TABLE meter_lease (
    meter_id  bigint PRIMARY KEY REFERENCES meter(id) ON DELETE CASCADE,
    holder    text NOT NULL,
    token     bigint NOT NULL,
    expires   timestamptz NOT NULL
);

-- Network cells: at most max_sessions sessions at once, new connections at most
-- connects_per_s a second (a bucket of burst tokens).
CREATE TABLE cell (
    name            text PRIMARY KEY,
    max_sessions    integer NOT NULL CHECK (max_sessions > 0),
    connects_per_s  double precision NOT NULL CHECK (connects_per_s > 0),
    burst           double precision NOT NULL CHECK (burst >= 1),
    tokens          double precision NOT NULL,
    refilled        timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE TABLE cell_slot (
    cell     text NOT NULL REFERENCES cell(name) ON DELETE CASCADE,
    slot     integer NOT NULL,
    holder   text,
    token    bigint,
    expires  timestamptz,
    PRIMARY KEY (cell, slot)
);

-- Time series: one row per meter × source × OBIS × attribute with its scaler and unit.
-- source is '' for a value read as it is (a register, stamped with the meter's clock) and
-- the profile's OBIS for a profile column (stamped with the row's capture time), so a
-- load profile's intervals never mix with register snapshots. Readings hold the integer
-- the meter sent (value = raw × 10^scaler), never text.
CREATE TABLE series (
    id         serial PRIMARY KEY,
    meter_id   bigint NOT NULL REFERENCES meter(id) ON DELETE CASCADE,
    source     text NOT NULL DEFAULT '',
    obis       text NOT NULL,
    attribute  smallint NOT NULL,
    scaler     smallint NOT NULL DEFAULT 0,
    unit       smallint NOT NULL DEFAULT 255,
    UNIQUE (meter_id, source, obis, attribute)
);

-- quality: the profile row's status bits (IDIS AMR profile status), 0 for register reads.
CREATE TABLE reading (
    series_id  integer NOT NULL,
    time       timestamptz NOT NULL,
    raw        bigint NOT NULL,
    quality    smallint NOT NULL DEFAULT 0,
    received   timestamptz NOT NULL,
    PRIMARY KEY (series_id, time)
) PARTITION BY RANGE (time);
CREATE INDEX reading_time_brin ON reading USING brin (time);

-- Where each incremental profile read of a meter stopped.
CREATE TABLE profile_mark (
    meter_id   bigint NOT NULL REFERENCES meter(id) ON DELETE CASCADE,
    profile    text NOT NULL,
    last_time  timestamptz NOT NULL,
    PRIMARY KEY (meter_id, profile)
);

CREATE TABLE event (
    meter_id  bigint NOT NULL REFERENCES meter(id) ON DELETE CASCADE,
    log       text NOT NULL,
    time      timestamptz NOT NULL,
    code      integer NOT NULL,
    received  timestamptz NOT NULL,
    PRIMARY KEY (meter_id, log, time, code)
);

-- Pushes as they arrived (the ciphered APDU), stored once: the key is the sender's system
-- title and its invocation counter.
CREATE TABLE raw_push (
    system_title        bytea NOT NULL,
    invocation_counter  bigint NOT NULL,
    received            timestamptz NOT NULL,  -- when a listener took it
    stored              timestamptz NOT NULL DEFAULT clock_timestamp(),  -- when it was written here
    source              text NOT NULL,
    apdu                bytea NOT NULL,
    PRIMARY KEY (system_title, invocation_counter)
);

CREATE TABLE campaign (
    id        bigserial PRIMARY KEY,
    name      text NOT NULL,
    kind      text NOT NULL,
    params    jsonb NOT NULL DEFAULT '{}'::jsonb,
    created   timestamptz NOT NULL DEFAULT now()
);

-- One row per meter of a campaign; state ends 'done' or 'failed', exactly once.
CREATE TABLE job (
    campaign_id  bigint NOT NULL REFERENCES campaign(id) ON DELETE CASCADE,
    meter_id     bigint NOT NULL REFERENCES meter(id) ON DELETE CASCADE,
    state        text NOT NULL DEFAULT 'queued' CHECK (state IN ('queued', 'done', 'failed')),
    attempts     integer NOT NULL DEFAULT 0,  -- sessions that ended without the outcome
    claims       integer NOT NULL DEFAULT 0,  -- sessions begun (a session that never ends counts here only)
    rows         integer,
    error        text,
    worker       text,
    finished     timestamptz,
    PRIMARY KEY (campaign_id, meter_id)
);
CREATE INDEX job_open ON job (campaign_id, state);

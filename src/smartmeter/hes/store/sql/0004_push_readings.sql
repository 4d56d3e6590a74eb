-- Pushes into readings: a worker decodes each push it stores in raw_push (the push object list
-- of the setup that sent it, as `hes listen` does) and writes its values in the same
-- transaction, once: only a push whose raw_push row is new gives readings.

-- The values of pushes that are no integer of 64 bits (an octet string, a date-time, a
-- structure such as a scaler_unit, a float, a long64-unsigned past 2^63): their JSON form,
-- typed by JSON (a number stays a number), never forced into reading.raw. Few and small
-- beside the readings, so one table, not partitioned.
CREATE TABLE reading_data (
    series_id  integer NOT NULL REFERENCES series(id) ON DELETE CASCADE,
    time       timestamptz NOT NULL,
    data       jsonb NOT NULL,
    received   timestamptz NOT NULL,
    PRIMARY KEY (series_id, time)
);

-- The object's interface class, where a push object list said it; null where not known.
ALTER TABLE series ADD COLUMN class_id smallint;

-- Why a push's values are not in reading / reading_data (no keys for it, fits no push object
-- list, malformed ...); null when they are. Pushes stored before this migration were not decoded.
ALTER TABLE raw_push ADD COLUMN undecoded text;
UPDATE raw_push SET undecoded = 'stored before pushes were decoded';

-- `hes events` lists events oldest first across meters and selects them by time (--from,
-- --to): an index on time serves both without sorting a whole fleet's events before the
-- first row. The primary key (meter_id, log, time, code) serves one meter's events.
CREATE INDEX event_time ON event (time);

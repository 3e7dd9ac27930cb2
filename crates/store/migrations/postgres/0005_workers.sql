-- The `ferry serve` processes running on this database, by worker name: a second
-- process under a name a live one holds refuses to start (two workers of one name
-- would each take the other's runs back as their own). `heartbeat_at` is renewed
-- while the process runs; the row is deleted when it stops.
CREATE TABLE workers (
    name         TEXT PRIMARY KEY,
    host         TEXT NOT NULL,
    pid          BIGINT NOT NULL,
    started_at   BIGINT NOT NULL,
    heartbeat_at BIGINT NOT NULL
);

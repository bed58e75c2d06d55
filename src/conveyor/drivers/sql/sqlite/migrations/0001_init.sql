-- The jobs table, its indexes, and the worker totals.
--
-- Times are REAL seconds since the epoch. `state` holds only what is stored: 'delayed' is a
-- pending job whose available_at is still ahead, worked out when read. While a job is
-- reserved, available_at is when its lease runs out, so one index serves due jobs and
-- expired leases alike.

CREATE TABLE {prefix}jobs (
    id           TEXT PRIMARY KEY,
    queue        TEXT NOT NULL,
    name         TEXT NOT NULL,
    payload      TEXT NOT NULL,               -- JSON text, stored as pushed
    state        TEXT NOT NULL DEFAULT 'pending'
                 CHECK (state IN ('pending', 'reserved', 'succeeded', 'failed', 'cancelled')),
    attempt      INTEGER NOT NULL DEFAULT 0,
    max_attempts INTEGER NOT NULL,
    priority     INTEGER NOT NULL DEFAULT 0,
    created_at   REAL NOT NULL,
    available_at REAL NOT NULL,
    timeout      REAL,
    retry_delay  TEXT,                        -- a retry policy's JSON, never read here
    unique_key   TEXT,
    meta         TEXT NOT NULL DEFAULT '{}',  -- JSON object
    reservation  TEXT,                        -- the token of the current or last reserve
    worker       TEXT,
    finished_at  REAL,
    error        TEXT                         -- JSON of ErrorInfo.to_dict()
);

-- reserve: the best due job of a queue is the first entry of this index with
-- available_at <= now. Finished jobs are left out, so a million of them cost nothing here.
CREATE INDEX {prefix}jobs_ready ON {prefix}jobs (queue, priority DESC, available_at, id)
    WHERE state IN ('pending', 'reserved');

-- A unique key is held only while its job is unfinished; ack, fail and purge free it.
CREATE UNIQUE INDEX {prefix}jobs_unique ON {prefix}jobs (queue, name, unique_key)
    WHERE unique_key IS NOT NULL AND state IN ('pending', 'reserved');

-- list_jobs (oldest first by id), purge and prune; with available_at, counts reads only this.
CREATE INDEX {prefix}jobs_state ON {prefix}jobs (queue, state, id, available_at);

CREATE TABLE {prefix}workers (
    name      TEXT PRIMARY KEY,
    processed INTEGER NOT NULL DEFAULT 0,
    succeeded INTEGER NOT NULL DEFAULT 0,
    failed    INTEGER NOT NULL DEFAULT 0,
    retried   INTEGER NOT NULL DEFAULT 0
);

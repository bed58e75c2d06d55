-- rescued: how many times each job was taken back from a worker that stopped renewing its lease
-- (crashed, killed, frozen). alone: 1 while a worker runs the job with nothing beside it; a
-- death is charged to a job as an attempt only then (see JobInfo in job.py).
--
-- reserved_at and lease_expires_at: when the current (or last) reservation was made and when
-- its lease runs out, NULL once released; available_at keeps when the job became due, also
-- while it is reserved. due_at is when a job next needs a reserve: its lease end while it is
-- reserved, else its due time; jobs_ready now orders by it, so one index still serves due
-- jobs and expired leases alike.

ALTER TABLE {prefix}jobs ADD COLUMN rescued INTEGER NOT NULL DEFAULT 0;
ALTER TABLE {prefix}jobs ADD COLUMN alone INTEGER NOT NULL DEFAULT 0;
ALTER TABLE {prefix}jobs ADD COLUMN reserved_at REAL;
ALTER TABLE {prefix}jobs ADD COLUMN lease_expires_at REAL;
ALTER TABLE {prefix}jobs ADD COLUMN due_at REAL
    GENERATED ALWAYS AS (coalesce(lease_expires_at, available_at)) VIRTUAL;

-- Reserved jobs kept their lease end in available_at until now.
UPDATE {prefix}jobs SET lease_expires_at = available_at WHERE state = 'reserved';

DROP INDEX {prefix}jobs_ready;
CREATE INDEX {prefix}jobs_ready ON {prefix}jobs (queue, priority DESC, due_at, id)
    WHERE state IN ('pending', 'reserved');

-- Worker processes alive (see Driver.beat): one row per process, "name:host:pid".
CREATE TABLE {prefix}worker_processes (
    identity   TEXT PRIMARY KEY,
    worker     TEXT NOT NULL,
    started_at REAL NOT NULL,
    seen_at    REAL NOT NULL
);

-- Job control: a job's result (JSON text) and a cancel asked of its worker; paused queues.
ALTER TABLE {prefix}jobs ADD COLUMN result TEXT;
ALTER TABLE {prefix}jobs ADD COLUMN cancel INTEGER NOT NULL DEFAULT 0;
CREATE TABLE {prefix}queues (
    name   TEXT PRIMARY KEY,
    paused INTEGER NOT NULL DEFAULT 0
);

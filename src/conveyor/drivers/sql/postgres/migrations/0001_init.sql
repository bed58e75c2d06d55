-- The jobs table, its indexes, and the worker totals.
--
-- Times are double precision seconds since the epoch, as Python's time.time() gives them.
-- `state` holds only what is stored: 'delayed' is a pending job whose available_at is still
-- ahead, worked out when read. While a job is reserved, available_at is when its lease runs
-- out, so one index serves due jobs and expired leases alike. Ids and queue names compare
-- byte by byte (COLLATE "C"): cheaper than a locale, and ids sort by creation time.

CREATE TABLE {prefix}jobs (
    id           text COLLATE "C" PRIMARY KEY,
    queue        text COLLATE "C" NOT NULL,
    name         text NOT NULL,
    payload      text NOT NULL,               -- JSON text, stored as pushed
    state        text NOT NULL DEFAULT 'pending'
                 CHECK (state IN ('pending', 'reserved', 'succeeded', 'failed', 'cancelled')),
    attempt      integer NOT NULL DEFAULT 0,
    max_attempts integer NOT NULL,
    priority     integer NOT NULL DEFAULT 0,
    created_at   double precision NOT NULL,
    available_at double precision NOT NULL,
    timeout      double precision,
    retry_delay  text,                        -- a retry policy's JSON, never read here
    unique_key   text,
    meta         text NOT NULL DEFAULT '{}',  -- JSON object
    reservation  text,                        -- the token of the current or last reserve
    worker       text,
    finished_at  double precision,
    error        text                         -- JSON of ErrorInfo.to_dict()
)
-- Every reserve and settle rewrites rows: vacuum after 2% of them changed, not the default
-- 20%, so dead row versions do not pile up in the indexes that reserve walks.
WITH (autovacuum_vacuum_scale_factor = 0.02, autovacuum_analyze_scale_factor = 0.02);

-- reserve: the best due jobs of a queue are the first entries of this index with
-- available_at <= now. Finished jobs are left out, so a million of them cost nothing here.
-- Unfinished is said as `finished_at IS NULL` (ack and fail set it, retry_failed clears it),
-- not as a state test, on purpose: the settle statements test state = 'reserved', and an
-- index whose condition that implies tempts the planner, whenever its statistics undercount
-- the reserved jobs (a queue table's statistics are always stale), into a bitmap scan of
-- every unfinished job for each ack instead of a primary key lookup per job.
CREATE INDEX {prefix}jobs_ready ON {prefix}jobs (queue, priority DESC, available_at, id)
    WHERE finished_at IS NULL;

-- A unique key is held only while its job is unfinished; ack, fail and purge free it.
-- push_many's ON CONFLICT DO NOTHING skips a job that would break it.
CREATE UNIQUE INDEX {prefix}jobs_unique ON {prefix}jobs (queue, name, unique_key)
    WHERE unique_key IS NOT NULL AND state IN ('pending', 'reserved');

-- list_jobs (oldest first by id) and purge; with available_at, counts reads only the index.
CREATE INDEX {prefix}jobs_state ON {prefix}jobs (queue, state, id) INCLUDE (available_at);

-- prune: the oldest finished jobs of a queue first, so each batch reads only what it deletes.
CREATE INDEX {prefix}jobs_finished ON {prefix}jobs (queue, finished_at)
    WHERE state IN ('succeeded', 'failed', 'cancelled');

CREATE TABLE {prefix}workers (
    name      text PRIMARY KEY,
    processed bigint NOT NULL DEFAULT 0,
    succeeded bigint NOT NULL DEFAULT 0,
    failed    bigint NOT NULL DEFAULT 0,
    retried   bigint NOT NULL DEFAULT 0
);

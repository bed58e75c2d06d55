-- conveyor's SQL for SQLite (3.40 or later): one block per driver method, named after it.
--
-- Parameters are :named and always passed as one dict; keys a statement does not use are
-- ignored. A batch arrives as ONE JSON text parameter (:items, :ids, :queues) unpacked with
-- json_each, so every method is one statement whatever the batch size.
--
-- One clock: every time is the database's, the `now` block below, which the loader writes in
-- for each `{now}`; never a time passed in by a caller, so a process whose clock is off (or
-- whose time source a test shifted) cannot move a lease, a due time or the prune horizon.
-- Callers pass delays and durations instead (lease, older_than, an item's delay).
--
-- Statements that return jobs return these columns (the driver reads them by name):
-- id, queue, name, payload, state, attempt, max_attempts, priority, created_at, available_at,
-- timeout, retry_delay, unique_key, meta, reservation, worker, finished_at, error, rescued,
-- alone, reserved_at, lease_expires_at, result, cancel, and `now`, the database's time as the
-- statement ran (it tells delayed from pending); `get` also returns errors, the error history.

-- name: now
-- The clock: seconds since the epoch, to the millisecond; the same for a whole statement.
(julianday('now') - 2440587.5) * 86400.0

-- name: schema_version_create
-- Create the table that records which migrations ran; run inside the migration transaction.
CREATE TABLE IF NOT EXISTS {prefix}schema_version (
    version    INTEGER PRIMARY KEY,
    name       TEXT NOT NULL,
    applied_at REAL NOT NULL
);

-- name: schema_version
-- The highest migration applied so far (NULL before the first).
SELECT max(version) AS version FROM {prefix}schema_version;

-- name: schema_version_record
-- Record one applied migration, in the same transaction as the migration itself.
INSERT INTO {prefix}schema_version (version, name, applied_at)
VALUES (:version, :name, {now});

-- name: push
-- Insert one job without a unique key: push_many's insert for one job, with plain parameters
-- (no json_each to parse). A push of an id stored already inserts nothing.
INSERT INTO {prefix}jobs (
    id, queue, name, payload, created_at, available_at, max_attempts, priority,
    timeout, retry_delay, meta
)
SELECT
    :id, :queue, :name, :payload, clock.now, clock.now + :delay,
    :max_attempts, :priority, :timeout, :retry_delay, :meta
FROM (SELECT {now} AS now) AS clock
WHERE true
ON CONFLICT DO NOTHING;

-- name: push_many
-- Insert new jobs from :items; a job whose unique key an unfinished job holds is skipped.
-- Each item is [id, queue, name, payload, delay, max_attempts, priority, timeout,
-- retry_delay, unique_key, meta]: the job is created now and due `delay` seconds later.
-- `WHERE true` is SQLite's rule for INSERT ... SELECT ... ON CONFLICT (the parser would read
-- ON as a join constraint).
INSERT INTO {prefix}jobs (
    id, queue, name, payload, created_at, available_at, max_attempts, priority,
    timeout, retry_delay, unique_key, meta
)
SELECT
    value->>0, value->>1, value->>2, value->>3, clock.now, clock.now + (value->>4),
    value->>5, value->>6, value->>7, value->>8, value->>9, value->>10
FROM json_each(:items), (SELECT {now} AS now) AS clock
WHERE true
ON CONFLICT DO NOTHING
RETURNING id;

-- name: push_many_shared
-- push_many for jobs alike but for id and payload (:items is [[id, payload], ...]): the rest
-- are parameters, so each item has two fields to read, not eleven. No unique keys here.
INSERT INTO {prefix}jobs (
    id, queue, name, payload, created_at, available_at, max_attempts, priority,
    timeout, retry_delay, unique_key, meta
)
SELECT
    value->>0, :queue, :name, value->>1, clock.now, clock.now + :delay,
    :max_attempts, :priority, :timeout, :retry_delay, NULL, :meta
FROM json_each(:items), (SELECT {now} AS now) AS clock
WHERE true
ON CONFLICT DO NOTHING;

-- name: push_many_holders
-- For skipped unique jobs in :items ([index, queue, name, unique_key, id]), the unfinished
-- holder, and the job itself if its id is stored (which the caller prefers: see push).
SELECT item.value->>0 AS item, job.id AS id
FROM json_each(:items) AS item
JOIN {prefix}jobs AS job
  ON job.queue = item.value->>1
 AND job.name = item.value->>2
 AND job.unique_key = item.value->>3
 AND job.state IN ('pending', 'reserved')
UNION ALL
SELECT item.value->>0 AS item, job.id AS id
FROM json_each(:items) AS item
JOIN {prefix}jobs AS job ON job.id = item.value->>4;

-- name: reserve
-- Take up to :limit due jobs (pending and due, or reserved with an expired lease) from :queues.
-- One statement: SQLite holds the write lock from its first step, so two processes can never
-- pick the same job. Each queue contributes its best :limit from the jobs_ready index (a
-- bounded scan even with a million jobs waiting), then the best :limit of those win.
-- A pending job's attempt goes up by one. A reserved job here is rescued (its worker stopped
-- renewing its lease): rescued goes up by one, and attempt only if it was running alone (see
-- JobInfo in job.py); the alone mark is cleared. SET expressions all read the row as it was.
UPDATE {prefix}jobs AS job
SET state = 'reserved',
    attempt = attempt + CASE WHEN state = 'reserved' AND alone = 0 THEN 0 ELSE 1 END,
    rescued = rescued + CASE WHEN state = 'reserved' THEN 1 ELSE 0 END,
    alone = 0,
    reservation = :token,
    worker = :worker,
    reserved_at = picked.now,
    lease_expires_at = picked.now + :lease
FROM (
    SELECT due.id, clock.now
    FROM (SELECT DISTINCT value AS queue FROM json_each(:queues)) AS wanted
    CROSS JOIN (SELECT {now} AS now) AS clock
    JOIN {prefix}jobs AS due ON due.id IN (
        SELECT best.id FROM {prefix}jobs AS best
        WHERE best.queue = wanted.queue
          AND best.state IN ('pending', 'reserved')
          AND best.due_at <= clock.now
        ORDER BY best.priority DESC, best.due_at, best.id
        LIMIT :limit
    )
    ORDER BY due.priority DESC, due.due_at, due.id
    LIMIT :limit
) AS picked
WHERE job.id = picked.id
RETURNING id, queue, name, payload, state, attempt, max_attempts, priority, created_at,
    available_at, timeout, retry_delay, unique_key, meta, reservation, worker, finished_at,
    error, rescued, alone, reserved_at, lease_expires_at, result, cancel, {now} AS now;

-- name: renew
-- Extend the leases of the jobs in :items ([id, token]) still reserved under their token;
-- with :alone = 1, also mark them as running alone (never unmarked here).
UPDATE {prefix}jobs AS job
SET lease_expires_at = {now} + :lease,
    alone = max(alone, :alone)
FROM json_each(:items) AS item
WHERE job.id = item.value->>0
  AND job.reservation = item.value->>1
  AND job.state = 'reserved'
RETURNING id;

-- name: ack
-- Mark succeeded the jobs in :items ([id, token, result]) still reserved under their token,
-- keeping each one's result (JSON text, or NULL).
UPDATE {prefix}jobs AS job
SET state = 'succeeded',
    finished_at = {now},
    result = item.value->>2
FROM json_each(:items) AS item
WHERE job.id = item.value->>0
  AND job.reservation = item.value->>1
  AND job.state = 'reserved'
RETURNING id;

-- name: release
-- Put back to pending the jobs in :items ([id, token, delay, error, give_back]), due `delay`
-- seconds from now. A NULL error keeps the last one; give_back is 1 to hand the attempt back,
-- else 0. An error also joins the job's history: errors keeps the last 20 (MAX_ERRORS).
UPDATE {prefix}jobs AS job
SET state = 'pending',
    available_at = {now} + (item.value->>2),
    lease_expires_at = NULL,
    error = coalesce(item.value->>3, job.error),
    errors = CASE WHEN item.value->>3 IS NULL THEN job.errors ELSE json_insert(
        CASE WHEN json_array_length(coalesce(job.errors, '[]')) >= 20
             THEN json_remove(job.errors, '$[0]') ELSE coalesce(job.errors, '[]') END,
        '$[#]', json_set(item.value->>3, '$.attempt', job.attempt, '$.at', {now})) END,
    attempt = job.attempt - (item.value->>4)
FROM json_each(:items) AS item
WHERE job.id = item.value->>0
  AND job.reservation = item.value->>1
  AND job.state = 'reserved'
RETURNING id;

-- name: fail
-- Move to failed the jobs in :items ([id, token, error, cancelled]) still reserved under their
-- token; to cancelled those whose cancelled is 1. The error joins the job's history.
UPDATE {prefix}jobs AS job
SET state = CASE WHEN item.value->>3 = 1 THEN 'cancelled' ELSE 'failed' END,
    finished_at = {now},
    error = item.value->>2,
    errors = CASE WHEN item.value->>2 IS NULL THEN job.errors ELSE json_insert(
        CASE WHEN json_array_length(coalesce(job.errors, '[]')) >= 20
             THEN json_remove(job.errors, '$[0]') ELSE coalesce(job.errors, '[]') END,
        '$[#]', json_set(item.value->>2, '$.attempt', job.attempt, '$.at', {now})) END
FROM json_each(:items) AS item
WHERE job.id = item.value->>0
  AND job.reservation = item.value->>1
  AND job.state = 'reserved'
RETURNING id;

-- name: counts
-- Jobs per queue and visible state (a pending job not yet due counts as delayed), and the age
-- of each group's oldest job by when it became due (the driver reads it for pending jobs).
-- Live jobs are read through jobs_ready alone (it carries their state and due time, migration
-- 0009); finished ones from finished_counts (migration 0007), so a million finished jobs cost
-- nothing here.
SELECT queue,
       CASE WHEN state = 'pending' AND available_at > {now}
            THEN 'delayed' ELSE state END AS state,
       count(*) AS count,
       {now} - min(available_at) AS age
FROM {prefix}jobs
WHERE queue IN (SELECT value FROM json_each(:queues))
  AND state IN ('pending', 'reserved')
GROUP BY 1, 2
UNION ALL
SELECT queue, state, n AS count, NULL AS age
FROM {prefix}finished_counts
WHERE queue IN (SELECT value FROM json_each(:queues)) AND n <> 0;

-- name: list_jobs
-- One page of a queue's jobs in one finished state, oldest first by id, read through
-- jobs_state, which holds finished jobs only (the literal states let the planner see that the
-- partial index applies). :stored is the state.
-- Every list_jobs block starts after the id `after` ('' for the first page), then skips
-- `offset`: a cursor that pages on however the jobs listed before changed.
SELECT {job_columns},
       {now} AS now
FROM {prefix}jobs
WHERE queue = :queue
  AND state = :stored
  AND state IN ('succeeded', 'failed', 'cancelled')
  AND id > :after
ORDER BY id
LIMIT :limit OFFSET :offset;

-- name: list_jobs_live
-- list_jobs for pending, delayed and reserved jobs: the page's ids are picked from jobs_ready
-- alone (it holds each unfinished job's state and due time), sorted, and only those rows read.
-- :stored is the state as stored ('pending' for both pending and delayed).
SELECT {job_columns},
       {now} AS now
FROM {prefix}jobs
WHERE id IN (
    SELECT id
    FROM {prefix}jobs
    WHERE queue = :queue
      AND state = :stored
      AND state IN ('pending', 'reserved')
      AND (CASE WHEN state = 'pending' AND available_at > {now}
                THEN 'delayed' ELSE state END) = :state
      AND id > :after
    ORDER BY id
    LIMIT :limit OFFSET :offset
)
ORDER BY id;

-- name: list_jobs_named
-- One page of a queue's jobs of one name in one visible state, oldest first by id: the
-- filter comes before the page. For succeeded jobs: read through jobs_state, checking each
-- job's name. :stored is the state.
SELECT {job_columns},
       {now} AS now
FROM {prefix}jobs
WHERE queue = :queue
  AND state = :stored
  AND state IN ('succeeded', 'failed', 'cancelled')
  AND name = :name
  AND id > :after
ORDER BY id
LIMIT :limit OFFSET :offset;

-- name: list_jobs_named_failed
-- list_jobs_named for failed and cancelled jobs, read through the jobs_named index (the
-- literal states let the planner see that the partial index applies). :stored is the state.
SELECT {job_columns},
       {now} AS now
FROM {prefix}jobs
WHERE queue = :queue
  AND state = :stored
  AND state IN ('failed', 'cancelled')
  AND name = :name
  AND id > :after
ORDER BY id
LIMIT :limit OFFSET :offset;

-- name: list_jobs_named_live
-- list_jobs_named for pending, delayed and reserved jobs: read through jobs_ready, checking
-- each job's name, then sorted by id.
-- :stored is the state as stored ('pending' for both pending and delayed).
SELECT {job_columns},
       {now} AS now
FROM {prefix}jobs
WHERE queue = :queue
  AND state = :stored
  AND state IN ('pending', 'reserved')
  AND name = :name
  AND (CASE WHEN state = 'pending' AND available_at > {now}
            THEN 'delayed' ELSE state END) = :state
  AND id > :after
ORDER BY id
LIMIT :limit OFFSET :offset;

-- name: throughput
-- The queue's jobs finished per state and minute since :minutes whole minutes ago (the
-- current minute included), read from the jobs_finished index; `start` is where minute 0
-- begins. Without any, one row of NULLs that still carries `start`.
SELECT job.state AS state,
       CAST((job.finished_at - clock.start) / 60 AS INTEGER) AS minute,
       count(job.state) AS count,
       clock.start AS start
FROM (SELECT (CAST(({now}) / 60 AS INTEGER) - :minutes + 1) * 60.0 AS start) AS clock
LEFT JOIN {prefix}jobs AS job
  ON job.queue = :queue
 AND job.finished_at >= clock.start
 AND job.state IN ('succeeded', 'failed')
GROUP BY 1, 2;

-- name: get
-- One job by id.
SELECT {job_columns}, errors,
       {now} AS now
FROM {prefix}jobs
WHERE id = :id;

-- name: finished_ids
-- Up to :batch ids of a queue's jobs in one finished state (:stored), past :after in id
-- order, read through jobs_state: retry_failed and purge of a whole queue go a page at a time,
-- so no statement moves or deletes a whole backlog at once.
SELECT id
FROM {prefix}jobs
WHERE queue = :queue
  AND state = :stored
  AND state IN ('succeeded', 'failed', 'cancelled')
  AND id > :after
ORDER BY id
LIMIT :batch;

-- name: retry_failed
-- Move those of a queue's failed jobs whose ids are in :ids back to pending, due now, with
-- attempt and rescued back to 0 (the driver passes a batch of ids, never all of them).
-- OR IGNORE: a job whose unique key an unfinished job holds (possibly one retried by this
-- same statement) would break jobs_unique, so it is skipped and stays failed.
-- The jobs are found by primary key, one lookup per id: `:ids IS NULL OR id IN (...)` read
-- every failed job of the queue, 50 ms for one id among 200,000.
UPDATE OR IGNORE {prefix}jobs
SET state = 'pending',
    attempt = 0,
    rescued = 0,
    cancel = 0,
    available_at = {now},
    lease_expires_at = NULL,
    finished_at = NULL
WHERE id IN (SELECT value FROM json_each(:ids))
  AND queue = :queue
  AND state = 'failed';

-- name: purge
-- Delete those of a queue's jobs in one finished state (:stored) whose ids are in :ids, each
-- found by its id in jobs_state (the literal states let the planner see that the partial
-- index applies), never by reading every job of that state.
DELETE FROM {prefix}jobs
WHERE id IN (SELECT value FROM json_each(:ids))
  AND queue = :queue
  AND state = :stored
  AND state IN ('succeeded', 'failed', 'cancelled');

-- name: purge_live
-- purge for pending and delayed jobs, found by primary key.
-- :stored is the state as stored ('pending' for both); the driver never passes 'reserved'.
DELETE FROM {prefix}jobs
WHERE id IN (SELECT value FROM json_each(:ids))
  AND queue = :queue
  AND state = :stored
  AND (CASE WHEN state = 'pending' AND available_at > {now}
            THEN 'delayed' ELSE state END) = :state;

-- name: prune
-- Delete up to :batch of a queue's finished jobs that finished more than :older_than seconds
-- ago, oldest first, picked through jobs_finished. The driver repeats it until a batch comes
-- back short, so no statement holds the file's one write lock for long.
DELETE FROM {prefix}jobs
WHERE id IN (
    SELECT id FROM {prefix}jobs
    WHERE queue = :queue
      AND state IN ('succeeded', 'failed', 'cancelled')
      AND finished_at < {now} - :older_than
    ORDER BY finished_at
    LIMIT :batch
);

-- name: record_stats
-- Add to one worker's running totals, creating its row on first use.
INSERT INTO {prefix}workers (name, processed, succeeded, failed, retried)
VALUES (:worker, :processed, :succeeded, :failed, :retried)
ON CONFLICT (name) DO UPDATE SET
    processed = processed + excluded.processed,
    succeeded = succeeded + excluded.succeeded,
    failed = failed + excluded.failed,
    retried = retried + excluded.retried;

-- name: worker_stats
-- Every worker's running totals.
SELECT name, processed, succeeded, failed, retried FROM {prefix}workers;

-- name: beat
-- Note that a worker process is alive now; its first beat records when it started.
INSERT INTO {prefix}worker_processes (identity, worker, started_at, seen_at)
VALUES (:identity, :worker, {now}, {now})
ON CONFLICT (identity) DO UPDATE SET worker = excluded.worker, seen_at = excluded.seen_at;

-- name: beat_stopping
-- Forget a worker process that stopped cleanly, and any not heard from for a day.
DELETE FROM {prefix}worker_processes WHERE identity = :identity OR seen_at < {now} - 86400;

-- name: alive
-- The worker processes heard from in the last :within seconds, oldest first.
SELECT identity, worker, started_at, seen_at
FROM {prefix}worker_processes
WHERE seen_at >= {now} - :within
ORDER BY started_at, identity;

-- name: cancel
-- Cancel the jobs in :ids: a pending (or delayed) one becomes cancelled now, a reserved one is
-- marked for its worker to stop (cancel = 1). Returns the ids of the unfinished jobs found.
UPDATE {prefix}jobs
SET cancel = 1,
    finished_at = CASE WHEN state = 'reserved' THEN finished_at ELSE {now} END,
    state = CASE WHEN state = 'reserved' THEN state ELSE 'cancelled' END
WHERE id IN (SELECT value FROM json_each(:ids))
  AND state IN ('pending', 'reserved')
RETURNING id;

-- name: cancelling
-- Of the jobs in :items ([id, token]) still reserved under their token, those marked cancel.
SELECT job.id AS id
FROM json_each(:items) AS item
JOIN {prefix}jobs AS job ON job.id = item.value->>0 AND job.reservation = item.value->>1
WHERE job.state = 'reserved' AND job.cancel = 1;

-- name: pause
-- Pause (:paused = 1) or resume (0) a queue.
INSERT INTO {prefix}queues (name, paused) VALUES (:queue, :paused)
ON CONFLICT (name) DO UPDATE SET paused = excluded.paused;

-- name: paused
-- Which of :queues are paused.
SELECT name FROM {prefix}queues
WHERE name IN (SELECT value FROM json_each(:queues)) AND paused = 1;

-- name: mark_tick
-- Record :schedule's tick at :tick as job :job_id, unless a later tick is recorded already.
INSERT INTO {prefix}schedule_ticks (name, tick, job_id) VALUES (:schedule, :tick, :job_id)
ON CONFLICT (name) DO UPDATE SET tick = excluded.tick, job_id = excluded.job_id
WHERE excluded.tick > {prefix}schedule_ticks.tick;

-- name: ticks
-- The latest tick recorded for each of :schedules.
SELECT name, tick, job_id FROM {prefix}schedule_ticks
WHERE name IN (SELECT value FROM json_each(:schedules));

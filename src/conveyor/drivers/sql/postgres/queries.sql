-- conveyor's SQL for PostgreSQL (12 or later): one block per driver method, named after it.
--
-- Parameters are psycopg's named placeholders and always passed as one dict; keys a statement
-- does not use are ignored (so no bare percent sign may appear below, not even in a comment).
-- A batch arrives as ONE JSON text parameter (items, ids, queues) unpacked with
-- jsonb_array_elements, so every method is one statement whatever the batch size.
--
-- One clock: every time is the database's, the `now` block below, which the loader writes in
-- for each `{now}`; never a time passed in by a caller, so a process whose clock is off (or
-- whose time source a test shifted) cannot move a lease, a due time or the prune horizon.
-- Callers pass delays and durations instead (lease, older_than, an item's delay).
--
-- Statements that make a job due (push_many, release, retry_failed) also call
-- pg_notify('{prefix}jobs', queue). A notification is delivered when its transaction commits,
-- never before and never for a rollback: a listening worker wakes only for a job it can see.
--
-- Commits: push_many (and every statement not named below) waits, as PostgreSQL does by
-- default, until its commit is flushed to disk, so a job the caller was told is stored
-- survives a server crash. reserve, renew, ack, release, fail and record_stats say
-- set_config('synchronous_commit', 'off', true) for their own transaction only: they return
-- without waiting for the flush (a quarter to a third faster here), and a server crash may
-- lose the last few hundred milliseconds of them. That never loses a job, only makes one run
-- again: a lost reserve or settle leaves the job as it was, due again when its lease runs
-- out (at-least-once, as after a worker crash). A later flushed commit flushes them too.
--
-- Plans are made robust to stale statistics (a queue table's always are): the settle
-- statements find their jobs with `id = ANY (...)`, a primary key lookup per job, and match
-- each job's token in a JSON object keyed by [id, token], so no join order is left to guess.
-- Keyed by both, not by id alone: of two items naming one job (a stale token and the valid
-- one), the valid one settles it wherever it stands in the batch.
--
-- Statements that return jobs return these columns (the driver reads them by name):
-- id, queue, name, payload, state, attempt, max_attempts, priority, created_at, available_at,
-- timeout, retry_delay, unique_key, meta, reservation, worker, finished_at, error, rescued,
-- alone, reserved_at, lease_expires_at, result, cancel, and `now`, the server's time as the
-- statement ran (it tells delayed from pending).

-- name: now
-- The clock: seconds since the epoch as the statement started, to the microsecond. Stable
-- within a statement, so an index condition such as `available_at <= {now}` stays one.
extract(epoch FROM statement_timestamp())::float8

-- name: schema_version_create
-- Create the table of applied migrations, holding the migration lock; run first in the transaction.
-- Two processes opening a new database at once would otherwise race in CREATE TABLE (one fails
-- on a catalog unique index); the lock is released when the migration transaction ends.
-- The wait for it, and the migration's for its tables' locks, may be long: lock_timeout,
-- which every connection sets below its call's timeout, is lifted for this transaction, and
-- so is a statement_timeout the user's role or database sets (the lock is waited for, and an
-- index built, within one statement). SET LOCAL comes first, a statement of its own: a
-- statement's timer starts with it, so one set inside the DO block would come too late.
SET LOCAL statement_timeout = 0;
DO $$
BEGIN
    PERFORM set_config('lock_timeout', '0', true);
    PERFORM pg_advisory_xact_lock(hashtext('conveyor migrate {prefix}'));
    IF to_regclass('{prefix}schema_version') IS NULL THEN
        CREATE TABLE {prefix}schema_version (
            version    integer PRIMARY KEY,
            name       text NOT NULL,
            applied_at double precision NOT NULL
        );
    END IF;
END
$$;

-- name: schema_version
-- The highest migration applied so far (NULL before the first), and whether the jobs table has
-- both triggers that count finished jobs (migration 0004): `pg_dump --table` of the tables alone
-- leaves out the function they call, so pg_restore cannot make them (see schema_repair).
SELECT max(version) AS version,
       (SELECT count(*) FROM pg_trigger
        WHERE tgrelid = to_regclass('{prefix}jobs')
          AND tgname IN ('{prefix}count_finished_update', '{prefix}count_finished_delete')) = 2
           AS whole
FROM {prefix}schema_version;

-- name: schema_repair
-- Put back the function and triggers of migrations 0004 and 0007 that count finished jobs, and
-- count them again from the rows, since finishes went uncounted while the triggers were gone.
-- Run after schema_version_create, under the migration lock. CREATE TRIGGER locks the jobs table
-- against writes until the commit, so no finish falls between the count and the triggers.
CREATE OR REPLACE FUNCTION {prefix}count_finished() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        INSERT INTO {prefix}finished_counts (queue, state, n)
        SELECT queue, state, -count(*) FROM gone
        WHERE state IN ('succeeded', 'failed', 'cancelled')
        GROUP BY queue, state;
    END IF;
    IF TG_OP IN ('UPDATE', 'INSERT') THEN
        INSERT INTO {prefix}finished_counts (queue, state, n)
        SELECT queue, state, count(*) FROM came
        WHERE state IN ('succeeded', 'failed', 'cancelled')
        GROUP BY queue, state;
    END IF;
    RETURN NULL;
END
$$;
DROP TRIGGER IF EXISTS {prefix}count_finished_update ON {prefix}jobs;
CREATE TRIGGER {prefix}count_finished_update AFTER UPDATE ON {prefix}jobs
    REFERENCING OLD TABLE AS gone NEW TABLE AS came
    FOR EACH STATEMENT EXECUTE FUNCTION {prefix}count_finished();
DROP TRIGGER IF EXISTS {prefix}count_finished_delete ON {prefix}jobs;
CREATE TRIGGER {prefix}count_finished_delete AFTER DELETE ON {prefix}jobs
    REFERENCING OLD TABLE AS gone
    FOR EACH STATEMENT EXECUTE FUNCTION {prefix}count_finished();
DELETE FROM {prefix}finished_counts;
INSERT INTO {prefix}finished_counts (queue, state, n)
SELECT queue, state, count(*) FROM {prefix}jobs
WHERE state IN ('succeeded', 'failed', 'cancelled')
GROUP BY queue, state;

-- name: schema_version_record
-- Record one applied migration, in the same transaction as the migration itself.
INSERT INTO {prefix}schema_version (version, name, applied_at)
VALUES (%(version)s, %(name)s, {now});

-- name: push
-- Insert one job without a unique key, and notify its queue: one statement, one round trip.
-- A push of an id stored already inserts nothing and notifies nothing: RETURNING runs only for
-- the row inserted. Plain parameters rather than push_many's JSON array: the server parses no
-- JSON and plans a single-row insert (and no CTE around it: about a sixth less server time).
INSERT INTO {prefix}jobs (
    id, queue, name, payload, created_at, available_at, max_attempts, priority,
    timeout, retry_delay, meta
)
VALUES (
    %(id)s, %(queue)s, %(name)s, %(payload)s, {now}, {now} + %(delay)s::float8,
    %(max_attempts)s, %(priority)s, %(timeout)s::float8, %(retry_delay)s, %(meta)s
)
ON CONFLICT DO NOTHING
RETURNING pg_notify('{prefix}jobs', queue);

-- name: push_many
-- Insert new jobs from items, in order; a job whose unique key an unfinished job holds is skipped.
-- Each item is [id, queue, name, payload, delay, max_attempts, priority, timeout,
-- retry_delay, unique_key, meta]: the job is created now and due `delay` seconds later.
-- Inserting in item order makes the first of two items sharing a unique key the one stored.
-- Each queue that got a job is notified once.
WITH item AS (
    SELECT value AS v, ordinality AS n
    FROM jsonb_array_elements(%(items)s::jsonb) WITH ORDINALITY
),
pushed AS (
    INSERT INTO {prefix}jobs (
        id, queue, name, payload, created_at, available_at, max_attempts, priority,
        timeout, retry_delay, unique_key, meta
    )
    SELECT v->>0, v->>1, v->>2, v->>3, {now}, {now} + (v->>4)::float8,
           (v->>5)::integer, (v->>6)::integer, (v->>7)::float8, v->>8, v->>9, v->>10
    FROM item
    ORDER BY n
    ON CONFLICT DO NOTHING
    RETURNING id, queue
)
SELECT pushed.id
FROM pushed,
     (SELECT count(pg_notify('{prefix}jobs', queue)) FROM (SELECT DISTINCT queue FROM pushed) AS q)
         AS notified;

-- name: push_many_clock
-- The clock a push_many COPY stamps its jobs with; each queue in queues (JSON) notified at commit.
-- A COPY computes nothing, so the driver reads the server's time here, in the COPY's own
-- transaction, and writes created_at and available_at (that time plus the job's delay) itself.
SELECT {now} AS now,
       (SELECT count(pg_notify('{prefix}jobs', queue))
        FROM jsonb_array_elements_text(%(queues)s::jsonb) AS queue) AS notified;

-- name: push_many_copy_jobs
-- New jobs without unique keys straight into the jobs table, as COPY's stream (the bulk path).
-- No id may be stored already: a batch pushed again (a retry after a lost reply) fails on the
-- primary key, rolls back whole, and goes through push_many_stage instead, which skips those.
-- The two columns that differ between jobs alike come first (see copy.py).
COPY {prefix}jobs (
    id, payload, queue, name, created_at, available_at, max_attempts, priority, timeout,
    retry_delay, meta
) FROM STDIN;

-- name: push_many_stage
-- A staging table for push_many_copy, gone at the end of the transaction that made it.
-- Its columns are the items' of push_many, in that order, after n, which keeps COPY's order.
CREATE TEMPORARY TABLE {prefix}push_stage (
    n            bigserial,
    id           text,
    queue        text,
    name         text,
    payload      text,
    delay        float8,
    max_attempts integer,
    priority     integer,
    timeout      float8,
    retry_delay  text,
    unique_key   text,
    meta         text
) ON COMMIT DROP;

-- name: push_many_copy
-- Rows of push_many items into the staging table, as COPY's stream (PostgreSQL's bulk path).
COPY {prefix}push_stage (
    id, queue, name, payload, delay, max_attempts, priority, timeout, retry_delay, unique_key,
    meta
) FROM STDIN;

-- name: push_many_staged
-- push_many, its items read from the staging table: the same insert, skips and notification.
WITH pushed AS (
    INSERT INTO {prefix}jobs (
        id, queue, name, payload, created_at, available_at, max_attempts, priority,
        timeout, retry_delay, unique_key, meta
    )
    SELECT id, queue, name, payload, {now}, {now} + delay, max_attempts, priority, timeout,
           retry_delay, unique_key, meta
    FROM {prefix}push_stage
    ORDER BY n
    ON CONFLICT DO NOTHING
    RETURNING id, queue
)
SELECT count(*) AS pushed
FROM pushed,
     (SELECT count(pg_notify('{prefix}jobs', queue)) FROM (SELECT DISTINCT queue FROM pushed) AS q)
         AS notified;

-- name: push_many_holders
-- For skipped unique jobs in items ([index, queue, name, unique_key, id]), the unfinished
-- holder, and the job itself if its id is stored (which the caller prefers: see push).
-- LIMIT 1 keeps the lateral subquery a lookup in jobs_unique per item (at most one holder).
SELECT (item.value->>0)::integer AS item, holder.id AS id
FROM jsonb_array_elements(%(items)s::jsonb) AS item
CROSS JOIN LATERAL (
    SELECT job.id
    FROM {prefix}jobs AS job
    WHERE job.queue = item.value->>1
      AND job.name = item.value->>2
      AND job.unique_key = item.value->>3
      AND job.state IN ('pending', 'reserved')
    LIMIT 1
) AS holder
UNION ALL
SELECT (item.value->>0)::integer AS item, job.id AS id
FROM jsonb_array_elements(%(items)s::jsonb) AS item
JOIN {prefix}jobs AS job ON job.id = item.value->>4;

-- name: reserve
-- Take up to limit due jobs (pending and due, or reserved with an expired lease) from queues.
-- Each queue contributes its best `limit` from the jobs_ready index (an ordered index scan that
-- stops early, even with a million jobs waiting), then the best `limit` of those win;
-- `finished_at IS NULL` is that index's condition (see migrations/0001_init.sql).
-- FOR UPDATE SKIP LOCKED: a row another reserve is taking right now is passed over instead of
-- waited for, so concurrent workers never queue behind each other; and a row locked here is
-- checked again at its newest version, so a job another worker took a moment ago (no longer
-- due) is dropped. Two workers can therefore never both hold a job while its lease is valid.
-- A pending job's attempt goes up by one. A reserved job here is rescued (its worker stopped
-- renewing its lease): rescued goes up by one, and attempt only if it was running alone (see
-- JobInfo in job.py); the alone mark is cleared. SET expressions all read the row as it was.
UPDATE {prefix}jobs AS job
SET state = 'reserved',
    attempt = job.attempt
        + CASE WHEN job.state = 'reserved' AND job.alone = 0 THEN 0 ELSE 1 END,
    rescued = job.rescued + CASE WHEN job.state = 'reserved' THEN 1 ELSE 0 END,
    alone = 0,
    reservation = %(token)s,
    worker = %(worker)s,
    reserved_at = {now},
    lease_expires_at = {now} + %(lease)s::float8
FROM (SELECT set_config('synchronous_commit', 'off', true)) AS relaxed
WHERE job.id = ANY (ARRAY(
    SELECT best.id
    FROM (SELECT DISTINCT jsonb_array_elements_text(%(queues)s::jsonb) AS queue) AS wanted
    CROSS JOIN LATERAL (
        SELECT due.id, due.priority, due.due_at
        FROM {prefix}jobs AS due
        WHERE due.queue = wanted.queue
          AND due.finished_at IS NULL
          AND due.state IN ('pending', 'reserved')
          AND due.due_at <= {now}
        ORDER BY due.priority DESC, due.due_at, due.id
        LIMIT %(limit)s
        FOR UPDATE SKIP LOCKED
    ) AS best
    ORDER BY best.priority DESC, best.due_at, best.id
    LIMIT %(limit)s
))
RETURNING job.id, job.queue, job.name, job.payload, job.state, job.attempt, job.max_attempts,
    job.priority, job.created_at, job.available_at, job.timeout, job.retry_delay,
    job.unique_key, job.meta, job.reservation, job.worker, job.finished_at, job.error,
    job.rescued, job.alone, job.reserved_at, job.lease_expires_at, job.result, job.cancel,
    {now} AS now;

-- name: planner_rows
-- The planner's count of rows in the jobs table (pg_class.reltuples; -1 if never counted).
SELECT reltuples::float8 AS rows FROM pg_class WHERE oid = '{prefix}jobs'::regclass;

-- name: analyze
-- Count the jobs table again for the planner (statistics.py: after a burst into a drained queue).
ANALYZE {prefix}jobs;

-- name: renew
-- Extend the leases of the jobs in items ([id, token]) still reserved under their token;
-- with alone = 1, also mark them as running alone (never unmarked here).
WITH item AS (
    SELECT jsonb_object_agg(jsonb_build_array(value->0, value->1)::text, value) AS by_fence,
           array_agg(value->>0) AS ids,
           set_config('synchronous_commit', 'off', true) AS relaxed
    FROM jsonb_array_elements(%(items)s::jsonb)
)
UPDATE {prefix}jobs AS job
SET lease_expires_at = {now} + %(lease)s::float8,
    alone = greatest(job.alone, %(alone)s::smallint)
FROM item
WHERE job.id = ANY (ARRAY(SELECT unnest(ids) FROM item))
  AND item.by_fence ? jsonb_build_array(job.id, job.reservation)::text
  AND job.state = 'reserved'
RETURNING job.id;

-- name: ack
-- Mark succeeded the jobs in items ([id, token, result]) still reserved under their token,
-- keeping each one's result (JSON text, or null).
WITH item AS (
    SELECT jsonb_object_agg(jsonb_build_array(value->0, value->1)::text, value) AS by_fence,
           array_agg(value->>0) AS ids,
           set_config('synchronous_commit', 'off', true) AS relaxed
    FROM jsonb_array_elements(%(items)s::jsonb)
)
UPDATE {prefix}jobs AS job
SET state = 'succeeded',
    finished_at = {now},
    result = item.by_fence->jsonb_build_array(job.id, job.reservation)::text->>2
FROM item
WHERE job.id = ANY (ARRAY(SELECT unnest(ids) FROM item))
  AND item.by_fence ? jsonb_build_array(job.id, job.reservation)::text
  AND job.state = 'reserved'
RETURNING job.id;

-- name: release
-- Put back to pending the jobs in items ([id, token, delay, error, give_back]), due `delay`
-- seconds from now. A NULL error keeps the last one; give_back is 1 to hand the attempt back,
-- else 0. Each queue that got a job due now is notified. An error joins the job's history,
-- errors, which keeps the last 20 (MAX_ERRORS; jsonb has no NUL, so one becomes U+FFFD).
WITH item AS (
    SELECT jsonb_object_agg(jsonb_build_array(value->0, value->1)::text, value) AS by_fence,
           array_agg(value->>0) AS ids,
           set_config('synchronous_commit', 'off', true) AS relaxed
    FROM jsonb_array_elements(%(items)s::jsonb)
),
released AS (
    UPDATE {prefix}jobs AS job
    SET state = 'pending',
        available_at = {now}
            + (item.by_fence->jsonb_build_array(job.id, job.reservation)::text->>2)::float8,
        lease_expires_at = NULL,
        error = coalesce(
            item.by_fence->jsonb_build_array(job.id, job.reservation)::text->>3, job.error),
        errors = CASE WHEN (item.by_fence->jsonb_build_array(job.id, job.reservation)::text->>3) IS NULL THEN job.errors
            ELSE ((CASE WHEN jsonb_array_length(coalesce(job.errors, '[]')::jsonb) >= 20
                        THEN coalesce(job.errors, '[]')::jsonb - 0
                        ELSE coalesce(job.errors, '[]')::jsonb END)
                  || jsonb_build_array(replace((item.by_fence->jsonb_build_array(job.id, job.reservation)::text->>3), '\u0000', '\ufffd')::jsonb
                                       || jsonb_build_object('attempt', job.attempt, 'at', {now})))::text
            END,
        attempt = job.attempt
            - (item.by_fence->jsonb_build_array(job.id, job.reservation)::text->>4)::integer
    FROM item
    WHERE job.id = ANY (ARRAY(SELECT unnest(ids) FROM item))
      AND item.by_fence ? jsonb_build_array(job.id, job.reservation)::text
      AND job.state = 'reserved'
    RETURNING job.id, job.queue, job.available_at
)
SELECT released.id
FROM released,
     (SELECT count(pg_notify('{prefix}jobs', queue))
      FROM (SELECT DISTINCT queue FROM released WHERE available_at <= {now}) AS q)
         AS notified;

-- name: fail
-- Move to failed the jobs in items ([id, token, error, cancelled]) still reserved under their
-- token; to cancelled those whose cancelled is 1. The error joins the job's history.
WITH item AS (
    SELECT jsonb_object_agg(jsonb_build_array(value->0, value->1)::text, value) AS by_fence,
           array_agg(value->>0) AS ids,
           set_config('synchronous_commit', 'off', true) AS relaxed
    FROM jsonb_array_elements(%(items)s::jsonb)
)
UPDATE {prefix}jobs AS job
SET state = CASE
        WHEN (item.by_fence->jsonb_build_array(job.id, job.reservation)::text->>3) = '1'
        THEN 'cancelled' ELSE 'failed' END,
    finished_at = {now},
    error = item.by_fence->jsonb_build_array(job.id, job.reservation)::text->>2,
    errors = CASE WHEN (item.by_fence->jsonb_build_array(job.id, job.reservation)::text->>2) IS NULL THEN job.errors
        ELSE ((CASE WHEN jsonb_array_length(coalesce(job.errors, '[]')::jsonb) >= 20
                    THEN coalesce(job.errors, '[]')::jsonb - 0
                    ELSE coalesce(job.errors, '[]')::jsonb END)
              || jsonb_build_array(replace((item.by_fence->jsonb_build_array(job.id, job.reservation)::text->>2), '\u0000', '\ufffd')::jsonb
                                   || jsonb_build_object('attempt', job.attempt, 'at', {now})))::text
        END
FROM item
WHERE job.id = ANY (ARRAY(SELECT unnest(ids) FROM item))
  AND item.by_fence ? jsonb_build_array(job.id, job.reservation)::text
  AND job.state = 'reserved'
RETURNING job.id;

-- name: counts
-- Jobs per queue and visible state (a pending job not yet due counts as delayed), and the age
-- of each group's oldest job by when it became due (the driver reads it for pending jobs).
-- Live jobs are read through jobs_state, index only. The queue test is `= ANY (ARRAY(...))`,
-- not `IN (SELECT ...)`: with IN the planner counts on 100 queues from the set-returning
-- function and took a sequential scan of every job once the table held many (210 ms against
-- 8 ms, EXPLAIN ANALYZE with a million finished jobs kept and 20,000 pending in the queue).
-- Finished ones are summed from finished_counts (migration 0004), whose rows for these queues
-- are folded into one per state on the way, by one reader at a time (the advisory lock), so
-- concurrent folds can neither deadlock nor be seen half done: the answer is read from the
-- statement's snapshot.
WITH folded AS (
    DELETE FROM {prefix}finished_counts
    WHERE queue IN (SELECT jsonb_array_elements_text(%(queues)s::jsonb))
      AND pg_try_advisory_xact_lock(hashtext('{prefix}finished_counts'))
    RETURNING queue, state, n
), refolded AS (
    INSERT INTO {prefix}finished_counts (queue, state, n)
    SELECT queue, state, sum(n) FROM folded GROUP BY queue, state
)
SELECT queue,
       CASE WHEN state = 'pending' AND available_at > {now} THEN 'delayed'
            ELSE state END AS state,
       count(*) AS count,
       {now} - min(available_at) AS age
FROM {prefix}jobs
WHERE queue = ANY (ARRAY(SELECT jsonb_array_elements_text(%(queues)s::jsonb)))
  AND state IN ('pending', 'reserved')
GROUP BY 1, 2
UNION ALL
SELECT queue, state, sum(n)::bigint AS count, NULL AS age
FROM {prefix}finished_counts
WHERE queue IN (SELECT jsonb_array_elements_text(%(queues)s::jsonb))
GROUP BY 1, 2
HAVING sum(n) <> 0;

-- name: list_jobs
-- One page of a queue's jobs in one visible state, oldest first by id.
-- `stored` is the state as stored ('pending' for both pending and delayed).
-- Every list_jobs block starts after the id `after` ('' for the first page), then skips
-- `offset`: a cursor that pages on however the jobs listed before changed.
SELECT {job_columns},
       {now} AS now
FROM {prefix}jobs
WHERE queue = %(queue)s
  AND state = %(stored)s
  AND (CASE WHEN state = 'pending' AND available_at > {now} THEN 'delayed'
            ELSE state END) = %(state)s
  AND id > %(after)s
ORDER BY id
LIMIT %(limit)s OFFSET %(offset)s;

-- name: list_jobs_named
-- One page of a queue's jobs of one name in one visible state, oldest first by id: the
-- filter comes before the page. Read through jobs_state, checking each job's name.
-- `stored` is the state as stored ('pending' for both pending and delayed).
SELECT {job_columns},
       {now} AS now
FROM {prefix}jobs
WHERE queue = %(queue)s
  AND state = %(stored)s
  AND name = %(name)s
  AND (CASE WHEN state = 'pending' AND available_at > {now} THEN 'delayed'
            ELSE state END) = %(state)s
  AND id > %(after)s
ORDER BY id
LIMIT %(limit)s OFFSET %(offset)s;

-- name: list_jobs_named_failed
-- list_jobs_named for failed and cancelled jobs, read through the jobs_named index (the
-- literal states let the planner see that the partial index applies).
-- `stored` is the state as stored ('pending' for both pending and delayed).
SELECT {job_columns},
       {now} AS now
FROM {prefix}jobs
WHERE queue = %(queue)s
  AND state = %(stored)s
  AND state IN ('failed', 'cancelled')
  AND name = %(name)s
  AND (CASE WHEN state = 'pending' AND available_at > {now} THEN 'delayed'
            ELSE state END) = %(state)s
  AND id > %(after)s
ORDER BY id
LIMIT %(limit)s OFFSET %(offset)s;

-- name: throughput
-- The queue's jobs finished per state and minute since minutes whole minutes ago (the
-- current minute included), read from the jobs_finished index; `start` is where minute 0
-- begins. Without any, one row of NULLs that still carries `start`.
SELECT job.state AS state,
       floor((job.finished_at - clock.start) / 60)::integer AS minute,
       count(job.state) AS count,
       clock.start AS start
FROM (SELECT (floor(({now}) / 60) - %(minutes)s + 1) * 60.0 AS start) AS clock
LEFT JOIN {prefix}jobs AS job
  ON job.queue = %(queue)s
 AND job.finished_at >= clock.start
 AND job.state IN ('succeeded', 'failed', 'cancelled')
GROUP BY 1, 2, 4;

-- name: get
-- One job by id.
SELECT {job_columns}, errors,
       {now} AS now
FROM {prefix}jobs
WHERE id = %(id)s;

-- name: finished_ids
-- Up to batch ids of a queue's jobs in one finished state (stored), past after in id order,
-- read through jobs_state: retry_failed and purge of a whole queue go a page at a time, so no
-- statement moves or deletes a whole backlog at once.
SELECT id
FROM {prefix}jobs
WHERE queue = %(queue)s
  AND state = %(stored)s
  AND id > %(after)s
ORDER BY id
LIMIT %(batch)s;

-- name: retry_failed
-- Move those of a queue's failed jobs whose ids are in ids back to pending, due now (the
-- driver passes a batch of ids, never all of them).
-- A job whose unique key an unfinished job holds stays failed, and of several failed jobs
-- sharing a key only the oldest moves, so jobs_unique is never broken. Returns a row per job.
-- The jobs are looked up by primary key, one id at a time, whatever the table's statistics
-- say (LATERAL; OFFSET 0 keeps the queue's test out of the lookup, which the planner would
-- otherwise make through an index on the queue): `ids IS NULL OR id IN (...)` read every
-- failed job of the queue, 150 ms for one id among 200,000, so a retry by name (a page of ids
-- at a time) took 85 s for 100,000 jobs. They are locked in id order, as two retries of
-- overlapping ids must lock them (else: a deadlock). OFFSET 0 makes the look for a key's
-- holder one jobs_unique lookup per key: as an anti join, the planner read every held key of
-- the queue (130-260 ms a call among 100,000 keyed pending jobs; now about 55 ms).
WITH candidate AS (
    SELECT job.id, job.name, job.unique_key
    FROM (SELECT DISTINCT jsonb_array_elements_text(%(ids)s::jsonb) AS id ORDER BY 1) AS wanted,
         LATERAL (
             SELECT id, queue, name, unique_key
             FROM {prefix}jobs
             WHERE id = wanted.id
               AND state = 'failed'
             OFFSET 0
             FOR UPDATE
         ) AS job
    WHERE job.queue = %(queue)s
),
chosen AS (
    SELECT id FROM candidate WHERE unique_key IS NULL
    UNION ALL
    SELECT first.id
    FROM (
        SELECT DISTINCT ON (name, unique_key) id, name, unique_key
        FROM candidate
        WHERE unique_key IS NOT NULL
        ORDER BY name, unique_key, id
    ) AS first
    WHERE NOT EXISTS (
        SELECT 1 FROM {prefix}jobs AS holder
        WHERE holder.queue = %(queue)s
          AND holder.name = first.name
          AND holder.unique_key = first.unique_key
          AND holder.state IN ('pending', 'reserved')
        OFFSET 0
    )
),
moved AS (
    UPDATE {prefix}jobs
    SET state = 'pending',
        attempt = 0,
        rescued = 0,  -- and the count of rescues starts again
        cancel = 0,
        available_at = {now},
        lease_expires_at = NULL,
        finished_at = NULL
    WHERE id = ANY (ARRAY(SELECT id FROM chosen))
    RETURNING id
)
SELECT moved.id
FROM moved,
     (SELECT count(pg_notify('{prefix}jobs', %(queue)s))
      FROM (SELECT 1 FROM moved LIMIT 1) AS any_moved) AS notified;

-- name: purge
-- Delete those of a queue's jobs in one visible state whose ids are in ids (the driver passes
-- a batch of ids, never all of them), each looked up by primary key, whatever the table's
-- statistics say (as retry_failed). The state is tested by the CASE alone (it holds the test
-- of the stored state), which no index serves: given `state = ...`, a planner without
-- statistics read every job of that state through a partial index.
-- The driver never passes 'reserved'.
DELETE FROM {prefix}jobs
WHERE id = ANY (ARRAY(
    SELECT job.id
    FROM jsonb_array_elements_text(%(ids)s::jsonb) AS wanted (id),
         LATERAL (SELECT id, queue FROM {prefix}jobs WHERE id = wanted.id OFFSET 0) AS job
    WHERE job.queue = %(queue)s
))
  AND (CASE WHEN state = 'pending' AND available_at > {now} THEN 'delayed'
            ELSE state END) = %(state)s;

-- name: prune
-- Delete up to batch of a queue's finished jobs that finished more than older_than seconds
-- ago, oldest first.
-- The driver repeats it until a batch comes back short, so no statement holds many locks or
-- writes a huge transaction. SKIP LOCKED: two workers pruning at once share the work.
DELETE FROM {prefix}jobs
WHERE id = ANY (ARRAY(
    SELECT id FROM {prefix}jobs
    WHERE queue = %(queue)s
      AND state IN ('succeeded', 'failed', 'cancelled')
      AND finished_at < {now} - %(older_than)s::float8
    ORDER BY finished_at
    LIMIT %(batch)s
    FOR UPDATE SKIP LOCKED
));

-- name: record_stats
-- Add to one worker's running totals, creating its row on first use; and fold finished_counts
-- into one row per queue and state, as `counts` does (one folder at a time, the advisory lock;
-- another folding: nothing done). A worker saves its totals each second it settled jobs, so the
-- rows its settles appended are folded within a second or two: before, only `counts` folded
-- them, and a day of settles with nobody reading left millions for the next read to fold,
-- past its timeout (a million: 2.2 s here).
WITH folded AS (
    DELETE FROM {prefix}finished_counts
    WHERE pg_try_advisory_xact_lock(hashtext('{prefix}finished_counts'))
    RETURNING queue, state, n
), refolded AS (
    INSERT INTO {prefix}finished_counts (queue, state, n)
    SELECT queue, state, sum(n) FROM folded GROUP BY queue, state HAVING sum(n) <> 0
)
INSERT INTO {prefix}workers AS total (name, processed, succeeded, failed, retried)
SELECT %(worker)s, %(processed)s, %(succeeded)s, %(failed)s, %(retried)s
FROM (SELECT set_config('synchronous_commit', 'off', true)) AS relaxed
ON CONFLICT (name) DO UPDATE SET
    processed = total.processed + excluded.processed,
    succeeded = total.succeeded + excluded.succeeded,
    failed = total.failed + excluded.failed,
    retried = total.retried + excluded.retried;

-- name: worker_stats
-- Every worker's running totals.
SELECT name, processed, succeeded, failed, retried FROM {prefix}workers;

-- name: beat
-- Note that a worker process is alive now; its first beat records when it started.
INSERT INTO {prefix}worker_processes AS process (identity, worker, started_at, seen_at)
SELECT %(identity)s, %(worker)s, {now}, {now}
FROM (SELECT set_config('synchronous_commit', 'off', true)) AS relaxed
ON CONFLICT (identity) DO UPDATE SET worker = excluded.worker, seen_at = excluded.seen_at;

-- name: beat_stopping
-- Forget a worker process that stopped cleanly, and any not heard from for a day.
DELETE FROM {prefix}worker_processes WHERE identity = %(identity)s OR seen_at < {now} - 86400;

-- name: alive
-- The worker processes heard from in the last `within` seconds, oldest first.
SELECT identity, worker, started_at, seen_at
FROM {prefix}worker_processes
WHERE seen_at >= {now} - %(within)s::float8
ORDER BY started_at, identity;

-- name: cancel
-- Cancel the jobs in ids: a pending (or delayed) one becomes cancelled now, a reserved one is
-- marked for its worker to stop (cancel = 1). Returns the ids of the unfinished jobs found.
UPDATE {prefix}jobs
SET cancel = 1,
    finished_at = CASE WHEN state = 'reserved' THEN finished_at ELSE {now} END,
    state = CASE WHEN state = 'reserved' THEN state ELSE 'cancelled' END
WHERE id = ANY (ARRAY(SELECT jsonb_array_elements_text(%(ids)s::jsonb)))
  AND state IN ('pending', 'reserved')
RETURNING id;

-- name: cancelling
-- Of the jobs in items ([id, token]) still reserved under their token, those marked cancel.
SELECT job.id AS id
FROM jsonb_array_elements(%(items)s::jsonb) AS item
JOIN {prefix}jobs AS job ON job.id = item.value->>0 AND job.reservation = item.value->>1
WHERE job.state = 'reserved' AND job.cancel = 1;

-- name: pause
-- Pause (paused = 1) or resume (0) a queue.
INSERT INTO {prefix}queues (name, paused) VALUES (%(queue)s, %(paused)s)
ON CONFLICT (name) DO UPDATE SET paused = excluded.paused;

-- name: paused
-- Which of queues are paused.
SELECT name FROM {prefix}queues
WHERE name IN (SELECT jsonb_array_elements_text(%(queues)s::jsonb)) AND paused = 1;

-- name: mark_tick
-- Record schedule's tick at tick as job job_id, unless a later tick is recorded already.
INSERT INTO {prefix}schedule_ticks (name, tick, job_id)
VALUES (%(schedule)s, %(tick)s, %(job_id)s)
ON CONFLICT (name) DO UPDATE SET tick = excluded.tick, job_id = excluded.job_id
WHERE excluded.tick > {prefix}schedule_ticks.tick;

-- name: ticks
-- The latest tick recorded for each of schedules.
SELECT name, tick, job_id FROM {prefix}schedule_ticks
WHERE name IN (SELECT jsonb_array_elements_text(%(schedules)s::jsonb));

-- conveyor's SQL for MySQL 8.0.21+ and MariaDB 10.8+: one block per driver method, named after it.
--
-- Parameters are %(named)s (pyformat) and always passed as one dict; keys a statement does not
-- use are ignored. A literal percent sign would have to be written twice: there is none. A
-- batch arrives as ONE JSON text parameter (items, ids, queues) unpacked with JSON_TABLE, so a
-- statement's size never depends on the batch's.
--
-- One clock: every time is the database's, the `now` block below, which the loader writes in
-- for each `{now}`; never a time passed in by a caller, so a process whose clock is off (or
-- whose time source a test shifted) cannot move a lease, a due time or the prune horizon.
-- Callers pass delays and durations instead (lease, older_than, an item's delay).
--
-- A block may hold several statements, each ending with ';' at the end of a line. The adapter
-- runs them in order in ONE transaction (the caller's, if a transaction is open) and returns
-- the rows of the last statement that returns rows, or the row count of the last statement.
-- On the driver's own connections the block goes to the server as one text, BEGIN and COMMIT
-- with it: one round trip, whatever the number of statements.
-- This stands in for UPDATE ... RETURNING, which neither server has: a settle statement first
-- locks the rows its fence matches (SELECT ... FOR UPDATE, whose rows are the answer), then
-- changes exactly those; no other transaction can change them in between.
--
-- Statements that return jobs return these columns (the driver reads them by name):
-- id, queue, name, payload, state, attempt, max_attempts, priority, created_at, available_at,
-- timeout, retry_delay, unique_key, meta, reservation, worker, finished_at, error, rescued,
-- alone, reserved_at, lease_expires_at, result, cancel, and `now`, the server's time as the
-- statement ran (it tells delayed from pending).

-- name: now
-- The clock: seconds since the epoch as the statement started, to the microsecond, a constant
-- for the whole statement, whatever the session's time zone (UNIX_TIMESTAMP(NOW(6)) would be
-- ambiguous in the repeated hour of a daylight-saving zone).
(UNIX_TIMESTAMP() + MICROSECOND(NOW(6)) / 1e6)

-- name: schema_version_create
-- Take the migration lock, then create the table that records which migrations ran.
-- MySQL commits DDL at once, so the migration transaction cannot keep two processes apart;
-- this named lock does. It is the session's until the adapter releases it when the migration
-- transaction ends. The name is per database and table prefix (and at most 64 characters).
-- It waits a day at most, longer than a migration may take (deadline.MIGRATION_TIMEOUT, which
-- the driver gives this block): a wait that long ends in an error, never in going on without
-- the lock, beside another process's migration.
DO GET_LOCK(CONCAT('conveyor.', LEFT(SHA2(CONCAT(DATABASE(), '.{prefix}'), 256), 40)), 86400);
CREATE TABLE IF NOT EXISTS {prefix}schema_version (
    version    INT          NOT NULL,
    name       VARCHAR(255) NOT NULL,
    applied_at DOUBLE       NOT NULL,
    PRIMARY KEY (version)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;

-- name: schema_version
-- The highest migration applied so far (NULL before the first).
SELECT MAX(version) AS version FROM {prefix}schema_version;

-- name: schema_version_record
-- Record one applied migration.
INSERT INTO {prefix}schema_version (version, name, applied_at)
VALUES (%(version)s, %(name)s, {now});

-- name: push
-- Insert one job without a unique key: push_many's insert for one job, with plain parameters
-- (no JSON_TABLE to parse). Its unique_slot is its id after a NUL byte (see migrations/0007),
-- so a push of an id stored already collides in the primary key and the no-op update leaves
-- the job as it was.
INSERT INTO {prefix}jobs (
    id, queue, name, payload, created_at, available_at, max_attempts, priority,
    timeout, retry_delay, meta, unique_slot
)
VALUES (
    %(id)s, %(queue)s, %(name)s, %(payload)s, {now}, {now} + %(delay)s,
    %(max_attempts)s, %(priority)s, %(timeout)s, %(retry_delay)s, %(meta)s,
    CONCAT(X'00', %(id)s)
)
ON DUPLICATE KEY UPDATE {prefix}jobs.id = {prefix}jobs.id;

-- name: push_many
-- Insert new jobs from items, in order, skipping those whose unique key is already held.
-- A job's unique_slot is its key's digest, or its id after a NUL byte (see migrations/0002 and
-- 0007): a skipped job collides in jobs_unique, and the no-op update leaves the holder as it
-- was (unlike INSERT IGNORE, which would let other errors pass as warnings too). Each item is
-- [id, queue, name, payload, delay, max_attempts, priority, timeout, retry_delay, unique_key,
-- meta]: the job is created now and due `delay` seconds later.
-- It returns no rows (there is no RETURNING): the driver then asks push_many_holders for
-- every unique job, and a job that was inserted is its own key's holder. A batch without
-- unique keys is therefore this one statement, in one round trip. JSON_TABLE would cut a
-- value to its column's size without a word, so its columns are wider than the table's:
-- a queue name too long for the table is an error (strict mode), never silently cut.
-- The items are read as utf8mb4 (_utf8mb4) whatever the connection's character set: a
-- caller's connection may be utf8mb3 (Django's default), in which an emoji is broken JSON.
INSERT INTO {prefix}jobs (
    id, queue, name, payload, created_at, available_at, max_attempts, priority,
    timeout, retry_delay, unique_key, meta, unique_slot
)
SELECT
    item.id, item.queue, item.name, item.payload, {now}, {now} + item.delay,
    item.max_attempts, item.priority, item.timeout, item.retry_delay, item.unique_key, item.meta,
    IF(item.unique_key IS NULL,
       CONCAT(X'00', item.id), UNHEX(SHA2(item.unique_key, 256)))
FROM JSON_TABLE(_utf8mb4%(items)s, '$[*]' COLUMNS (
    n            FOR ORDINALITY,
    id           VARBINARY(1024) PATH '$[0]',
    queue        VARBINARY(1024) PATH '$[1]',
    name         VARBINARY(1024) PATH '$[2]',
    payload      LONGTEXT        PATH '$[3]',
    delay        DOUBLE          PATH '$[4]',
    max_attempts INT             PATH '$[5]',
    priority     INT             PATH '$[6]',
    timeout      DOUBLE          PATH '$[7]',
    retry_delay  MEDIUMTEXT      PATH '$[8]',
    unique_key   MEDIUMTEXT      PATH '$[9]',
    meta         LONGTEXT        PATH '$[10]'
)) AS item
ORDER BY item.n
ON DUPLICATE KEY UPDATE {prefix}jobs.id = {prefix}jobs.id;

-- name: push_many_shared
-- push_many for jobs alike but for id and payload (items is [[id, payload], ...]): the rest
-- are parameters, so JSON_TABLE reads two fields per item, not eleven. No unique keys here, so
-- each slot is its job's id after a NUL byte. Columns wider than the table's, as in push_many.
INSERT INTO {prefix}jobs (
    id, queue, name, payload, created_at, available_at, max_attempts, priority,
    timeout, retry_delay, meta, unique_slot
)
SELECT
    item.id, %(queue)s, %(name)s, item.payload, {now}, {now} + %(delay)s,
    %(max_attempts)s, %(priority)s, %(timeout)s, %(retry_delay)s, %(meta)s,
    CONCAT(X'00', item.id)
FROM JSON_TABLE(%(items)s, '$[*]' COLUMNS (
    n       FOR ORDINALITY,
    id      VARBINARY(1024) PATH '$[0]',
    payload LONGTEXT        PATH '$[1]'
)) AS item
ORDER BY item.n
ON DUPLICATE KEY UPDATE {prefix}jobs.id = {prefix}jobs.id;

-- name: push_many_holders
-- For unique jobs in items ([index, queue, name, unique_key, id]), the unfinished holder, and
-- the job itself if its id is stored (which the caller prefers: see push). The holder is the
-- job itself if this transaction inserted it, else one that made its insert skip.
-- A plain read, which locks nothing: a locking read here would take a next-key lock in a
-- caller's REPEATABLE READ transaction and hold back other pushes until it ends. Items first
-- (STRAIGHT_JOIN), so each is one lookup of the whole jobs_unique key. Read as utf8mb4, as in
-- push_many, so that a key hashes alike on every connection.
SELECT item.item AS item, job.id AS id
FROM JSON_TABLE(_utf8mb4%(items)s, '$[*]' COLUMNS (
    item       INT            PATH '$[0]',
    queue      VARBINARY(255) PATH '$[1]',
    name       VARBINARY(255) PATH '$[2]',
    unique_key TEXT           PATH '$[3]'
)) AS item
STRAIGHT_JOIN {prefix}jobs AS job
  ON job.keyless = 0
 AND job.queue = item.queue
 AND job.name = item.name
 AND job.unique_slot = UNHEX(SHA2(item.unique_key, 256))
UNION ALL
SELECT item.item AS item, job.id AS id
FROM JSON_TABLE(_utf8mb4%(items)s, '$[*]' COLUMNS (
    item INT           PATH '$[0]',
    id   VARBINARY(64) PATH '$[4]'
)) AS item
STRAIGHT_JOIN {prefix}jobs AS job ON job.id = item.id;

-- name: reserve
-- Take up to limit due jobs from queues, then read them back by this call's fresh token.
-- Due: pending with its time come, or reserved with its lease run out.
--
-- Each queue contributes its best limit from the jobs_ready index: a bounded, index-ordered
-- scan even with a million jobs waiting. FOR UPDATE SKIP LOCKED locks what it picks and
-- passes over rows another reserve has locked, so concurrent reserves never wait for each
-- other and never pick the same job. It has to be one subquery per queue: one scan over
-- several queues would sort all of their due jobs, locking every one of them until commit,
-- so concurrent reserves would find nothing. Queues past the eighth share the last
-- subquery, which does sort (and lock) their due jobs: still correct, only less concurrent
-- and slower behind a backlog (the driver puts the queues it took jobs from lately first).
-- Rows a subquery locked but the final LIMIT left out stay locked until this short
-- transaction commits. queue0..queue7 are the first eight queues (NULL past the last one),
-- rest a JSON array of the others and more whether there are any: each name is sent once
-- (a JSON array of them all, read eleven times, was 77 KB of statement over 300 queues).
-- A pending job's attempt goes up by one. A reserved job here is rescued (its worker stopped
-- renewing its lease): rescued goes up by one, and attempt only if it was running alone (see
-- JobInfo in job.py); the alone mark is cleared. MySQL gives no order to the assignments of a multi-table UPDATE, so
-- they read the job's state and alone mark as picked, never as just changed.
UPDATE (
    SELECT due.id, due.state, due.alone
    FROM (
        (SELECT id, priority, due_at, state, alone FROM {prefix}jobs
         WHERE ready_queue = %(queue0)s AND due_at <= {now}
         ORDER BY priority DESC, due_at, id LIMIT %(limit)s FOR UPDATE SKIP LOCKED)
        UNION
        (SELECT id, priority, due_at, state, alone FROM {prefix}jobs
         WHERE ready_queue = %(queue1)s AND due_at <= {now}
         ORDER BY priority DESC, due_at, id LIMIT %(limit)s FOR UPDATE SKIP LOCKED)
        UNION
        (SELECT id, priority, due_at, state, alone FROM {prefix}jobs
         WHERE ready_queue = %(queue2)s AND due_at <= {now}
         ORDER BY priority DESC, due_at, id LIMIT %(limit)s FOR UPDATE SKIP LOCKED)
        UNION
        (SELECT id, priority, due_at, state, alone FROM {prefix}jobs
         WHERE ready_queue = %(queue3)s AND due_at <= {now}
         ORDER BY priority DESC, due_at, id LIMIT %(limit)s FOR UPDATE SKIP LOCKED)
        UNION
        (SELECT id, priority, due_at, state, alone FROM {prefix}jobs
         WHERE ready_queue = %(queue4)s AND due_at <= {now}
         ORDER BY priority DESC, due_at, id LIMIT %(limit)s FOR UPDATE SKIP LOCKED)
        UNION
        (SELECT id, priority, due_at, state, alone FROM {prefix}jobs
         WHERE ready_queue = %(queue5)s AND due_at <= {now}
         ORDER BY priority DESC, due_at, id LIMIT %(limit)s FOR UPDATE SKIP LOCKED)
        UNION
        (SELECT id, priority, due_at, state, alone FROM {prefix}jobs
         WHERE ready_queue = %(queue6)s AND due_at <= {now}
         ORDER BY priority DESC, due_at, id LIMIT %(limit)s FOR UPDATE SKIP LOCKED)
        UNION
        (SELECT id, priority, due_at, state, alone FROM {prefix}jobs
         WHERE ready_queue = %(queue7)s AND due_at <= {now}
         ORDER BY priority DESC, due_at, id LIMIT %(limit)s FOR UPDATE SKIP LOCKED)
        UNION
        (SELECT job.id, job.priority, job.due_at, job.state, job.alone
         FROM JSON_TABLE(%(rest)s, '$[*]' COLUMNS (queue VARBINARY(255) PATH '$')) AS extra
         STRAIGHT_JOIN {prefix}jobs AS job ON job.ready_queue = extra.queue
         WHERE %(more)s AND job.due_at <= {now}
         ORDER BY job.priority DESC, job.due_at, job.id
         LIMIT %(limit)s FOR UPDATE SKIP LOCKED)
    ) AS due
    ORDER BY due.priority DESC, due.due_at, due.id
    LIMIT %(limit)s
) AS picked
STRAIGHT_JOIN {prefix}jobs AS job ON job.id = picked.id
SET job.state = 'reserved',
    job.attempt = job.attempt
        + CASE WHEN picked.state = 'reserved' AND picked.alone = 0 THEN 0 ELSE 1 END,
    job.rescued = job.rescued + CASE WHEN picked.state = 'reserved' THEN 1 ELSE 0 END,
    job.alone = 0,
    job.reservation = %(token)s,
    job.worker = %(worker)s,
    job.reserved_at = {now},
    job.lease_expires_at = {now} + %(lease)s;
SELECT {job_columns},
       {now} AS now
FROM {prefix}jobs
WHERE reservation = %(token)s;

-- name: renew
-- Extend the leases of the jobs in items ([id, token]) still reserved under their token;
-- with alone = 1, also mark them as running alone (never unmarked here).
SELECT job.id AS id
FROM JSON_TABLE(%(items)s, '$[*]' COLUMNS (
    id    VARBINARY(64) PATH '$[0]',
    token VARBINARY(64) PATH '$[1]'
)) AS item
STRAIGHT_JOIN {prefix}jobs AS job ON job.id = item.id AND job.reservation = item.token
WHERE job.state = 'reserved'
FOR UPDATE;
UPDATE JSON_TABLE(%(items)s, '$[*]' COLUMNS (
    id    VARBINARY(64) PATH '$[0]',
    token VARBINARY(64) PATH '$[1]'
)) AS item
STRAIGHT_JOIN {prefix}jobs AS job ON job.id = item.id AND job.reservation = item.token
SET job.lease_expires_at = {now} + %(lease)s,
    job.alone = GREATEST(job.alone, %(alone)s)
WHERE job.state = 'reserved';

-- name: ack
-- Mark succeeded the jobs in items ([id, token, result]) still reserved under their token,
-- keeping each one's result (JSON text, or null).
SELECT job.id AS id
FROM JSON_TABLE(%(items)s, '$[*]' COLUMNS (
    id    VARBINARY(64) PATH '$[0]',
    token VARBINARY(64) PATH '$[1]'
)) AS item
STRAIGHT_JOIN {prefix}jobs AS job ON job.id = item.id AND job.reservation = item.token
WHERE job.state = 'reserved'
FOR UPDATE;
UPDATE JSON_TABLE(%(items)s, '$[*]' COLUMNS (
    id     VARBINARY(64) PATH '$[0]',
    token  VARBINARY(64) PATH '$[1]',
    result LONGTEXT      PATH '$[2]'
)) AS item
STRAIGHT_JOIN {prefix}jobs AS job ON job.id = item.id AND job.reservation = item.token
SET job.state = 'succeeded',
    job.finished_at = {now},
    job.result = item.result,
    job.unique_slot = CONCAT(X'00', job.id)
WHERE job.state = 'reserved';

-- name: release
-- Put back to pending the jobs in items ([id, token, delay, error, give_back]), due `delay`
-- seconds from now. A NULL error keeps the last one; give_back is 1 to hand the attempt back,
-- else 0. An error joins the job's history, errors, which keeps the last 20 (MAX_ERRORS).
SELECT job.id AS id
FROM JSON_TABLE(%(items)s, '$[*]' COLUMNS (
    id    VARBINARY(64) PATH '$[0]',
    token VARBINARY(64) PATH '$[1]'
)) AS item
STRAIGHT_JOIN {prefix}jobs AS job ON job.id = item.id AND job.reservation = item.token
WHERE job.state = 'reserved'
FOR UPDATE;
UPDATE JSON_TABLE(%(items)s, '$[*]' COLUMNS (
    id           VARBINARY(64) PATH '$[0]',
    token        VARBINARY(64) PATH '$[1]',
    delay        DOUBLE        PATH '$[2]',
    error        LONGTEXT      PATH '$[3]',
    give_back    INT           PATH '$[4]'
)) AS item
STRAIGHT_JOIN {prefix}jobs AS job ON job.id = item.id AND job.reservation = item.token
SET job.state = 'pending',
    job.available_at = {now} + item.delay,
    job.lease_expires_at = NULL,
    job.error = COALESCE(item.error, job.error),
    -- before attempt changes: MySQL assigns left to right, reading the values already set
    job.errors = IF(item.error IS NULL, job.errors, JSON_ARRAY_APPEND(
        IF(JSON_LENGTH(IFNULL(job.errors, '[]')) >= 20,
           JSON_REMOVE(job.errors, '$[0]'), IFNULL(job.errors, '[]')),
        '$', JSON_SET(item.error, '$.attempt', job.attempt, '$.at', {now}))),
    job.attempt = job.attempt - item.give_back
WHERE job.state = 'reserved';

-- name: fail
-- Move to failed the jobs in items ([id, token, error, cancelled]) still reserved under their
-- token; to cancelled those whose cancelled is 1. The error joins the job's history.
SELECT job.id AS id
FROM JSON_TABLE(%(items)s, '$[*]' COLUMNS (
    id    VARBINARY(64) PATH '$[0]',
    token VARBINARY(64) PATH '$[1]'
)) AS item
STRAIGHT_JOIN {prefix}jobs AS job ON job.id = item.id AND job.reservation = item.token
WHERE job.state = 'reserved'
FOR UPDATE;
UPDATE JSON_TABLE(%(items)s, '$[*]' COLUMNS (
    id    VARBINARY(64) PATH '$[0]',
    token VARBINARY(64) PATH '$[1]',
    error     LONGTEXT      PATH '$[2]',
    cancelled INT           PATH '$[3]'
)) AS item
STRAIGHT_JOIN {prefix}jobs AS job ON job.id = item.id AND job.reservation = item.token
SET job.state = IF(item.cancelled = 1, 'cancelled', 'failed'),
    job.finished_at = {now},
    job.unique_slot = CONCAT(X'00', job.id),
    job.error = item.error,
    job.errors = IF(item.error IS NULL, job.errors, JSON_ARRAY_APPEND(
        IF(JSON_LENGTH(IFNULL(job.errors, '[]')) >= 20,
           JSON_REMOVE(job.errors, '$[0]'), IFNULL(job.errors, '[]')),
        '$', JSON_SET(item.error, '$.attempt', job.attempt, '$.at', {now})))
WHERE job.state = 'reserved';

-- name: counts
-- Jobs per queue and visible state (a pending job not yet due counts as delayed), and the age
-- of each group's oldest job by when it became due (the driver reads it for pending jobs).
-- Live jobs are read through jobs_state; finished ones are summed from finished_counts
-- (migration 0006: a few slots per queue and state), so a million finished jobs cost nothing.
-- STRAIGHT_JOIN from each (queue named, live state) pair, one index lookup each: given an IN
-- list, MariaDB would rather read every job of the queue, finished ones included.
SELECT job.queue AS queue,
       CASE WHEN job.state = 'pending' AND job.available_at > {now} THEN 'delayed'
            ELSE job.state END AS state,
       COUNT(*) AS count,
       {now} - min(job.available_at) AS age
FROM (SELECT DISTINCT queue
      FROM JSON_TABLE(%(queues)s, '$[*]' COLUMNS (queue VARBINARY(255) PATH '$')) AS named)
     AS wanted
CROSS JOIN (SELECT 'pending' AS state UNION ALL SELECT 'reserved') AS live
STRAIGHT_JOIN {prefix}jobs AS job ON job.queue = wanted.queue AND job.state = live.state
GROUP BY 1, 2
UNION ALL
SELECT queue, state, SUM(n) AS count, NULL AS age
FROM {prefix}finished_counts
WHERE queue IN (
    SELECT wanted.queue
    FROM JSON_TABLE(%(queues)s, '$[*]' COLUMNS (queue VARBINARY(255) PATH '$')) AS wanted
)
GROUP BY 1, 2
HAVING SUM(n) <> 0;

-- name: list_jobs
-- One page of a queue's jobs in one visible state, oldest first by id.
-- stored is the state as stored ('pending' for both pending and delayed).
-- Every list_jobs block starts after the id `after` ('' for the first page), then skips
-- `offset`: a cursor that pages on however the jobs listed before changed.
SELECT {job_columns},
       {now} AS now
FROM {prefix}jobs
WHERE queue = %(queue)s
  AND state = %(stored)s
  AND (CASE WHEN state = 'pending' AND available_at > {now} THEN 'delayed' ELSE state END)
      = %(state)s
  AND id > %(after)s
ORDER BY id
LIMIT %(limit)s OFFSET %(offset)s;

-- name: list_jobs_named
-- One page of a queue's jobs of one name in one visible state, oldest first by id: the
-- filter comes before the page. Read through jobs_state, checking each job's name.
-- stored is the state as stored ('pending' for both pending and delayed).
SELECT {job_columns},
       {now} AS now
FROM {prefix}jobs
WHERE queue = %(queue)s
  AND state = %(stored)s
  AND name = %(name)s
  AND (CASE WHEN state = 'pending' AND available_at > {now} THEN 'delayed' ELSE state END)
      = %(state)s
  AND id > %(after)s
ORDER BY id
LIMIT %(limit)s OFFSET %(offset)s;

-- name: list_jobs_named_failed
-- list_jobs_named for failed and cancelled jobs, read through the jobs_named index (the
-- literal states let the planner see that the partial index applies).
-- stored is the state as stored ('pending' for both pending and delayed).
SELECT {job_columns},
       {now} AS now
FROM {prefix}jobs
WHERE queue = %(queue)s
  AND state = %(stored)s
  AND state IN ('failed', 'cancelled')
  AND name = %(name)s
  AND (CASE WHEN state = 'pending' AND available_at > {now} THEN 'delayed' ELSE state END)
      = %(state)s
  AND id > %(after)s
ORDER BY id
LIMIT %(limit)s OFFSET %(offset)s;

-- name: throughput
-- The queue's jobs finished per state and minute since minutes whole minutes ago (the
-- current minute included), read from the jobs_finished index; `start` is where minute 0
-- begins. Without any, one row of NULLs that still carries `start`.
SELECT job.state AS state,
       FLOOR((job.finished_at - clock.start) / 60) AS minute,
       COUNT(job.state) AS count,
       clock.start AS start
FROM (SELECT (FLOOR(({now}) / 60) - %(minutes)s + 1) * 60.0 AS start) AS clock
LEFT JOIN {prefix}jobs AS job
  ON job.queue = %(queue)s
 AND job.state IN ('succeeded', 'failed')
 AND job.finished_at >= clock.start
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
-- statement moves or deletes a whole backlog at once (one over a few hundred thousand jobs
-- outran the driver's timeout).
SELECT id
FROM {prefix}jobs FORCE INDEX (jobs_state)
WHERE queue = %(queue)s
  AND state = %(stored)s
  AND id > %(after)s
ORDER BY id
LIMIT %(batch)s;

-- name: retry_failed
-- Move a queue's failed jobs (all, or those in ids when not NULL) back to pending, due now,
-- with attempt and rescued back to 0. A job whose unique key an unfinished job holds stays
-- failed, and of several failed jobs sharing a key only the oldest moves, so jobs_unique is
-- never broken. They are left out by the WHERE, not skipped by UPDATE IGNORE: MariaDB runs
-- the AFTER UPDATE trigger of finished_counts for a row IGNORE skips, which took one off the
-- failed count per skipped job and try (the window function keeps `chosen` materialized,
-- so it may read the table the statement updates). The indexes are forced: a scan of a small
-- table would lock, and wait on, the row a caller's open transaction pushed; so would
-- reading the jobs table before `chosen` (STRAIGHT_JOIN). Given ids are looked up by primary
-- key: testing `id IN (JSON_TABLE ...)` on each of the queue's failed jobs made a retry of
-- one id cost 0.3 s among 50,000 failed jobs.
UPDATE (
    SELECT candidate.id
    FROM (
        SELECT job.id, job.name, job.unique_key,
               ROW_NUMBER() OVER (PARTITION BY job.name, job.unique_key ORDER BY job.id) AS nth
        FROM (
            SELECT wanted.id
            FROM JSON_TABLE(%(ids)s, '$[*]' COLUMNS (id VARBINARY(64) PATH '$')) AS wanted
            WHERE %(ids)s IS NOT NULL
            UNION
            SELECT id FROM {prefix}jobs FORCE INDEX (jobs_state)
            WHERE %(ids)s IS NULL AND queue = %(queue)s AND state = 'failed'
        ) AS given
        STRAIGHT_JOIN {prefix}jobs AS job ON job.id = given.id
        WHERE job.queue = %(queue)s
          AND job.state = 'failed'
    ) AS candidate
    WHERE candidate.unique_key IS NULL
       OR (candidate.nth = 1 AND NOT EXISTS (
           SELECT 1 FROM {prefix}jobs AS holder FORCE INDEX (jobs_unique)
           WHERE holder.keyless = 0
             AND holder.queue = %(queue)s
             AND holder.name = candidate.name
             AND holder.unique_slot = UNHEX(SHA2(candidate.unique_key, 256))
       ))
) AS chosen
STRAIGHT_JOIN {prefix}jobs AS job ON job.id = chosen.id
SET job.state = 'pending',
    job.attempt = 0,
    job.rescued = 0,
    job.cancel = 0,
    job.available_at = {now},
    job.lease_expires_at = NULL,
    job.finished_at = NULL,
    job.unique_slot = IF(job.unique_key IS NULL, job.unique_slot,
                         UNHEX(SHA2(job.unique_key, 256)))
WHERE job.state = 'failed';

-- name: purge
-- Delete a queue's jobs in one visible state (all, or those in ids when not NULL).
-- stored is the state as stored; the driver never passes 'reserved'. The jobs are found from
-- the ids given, by primary key (or, without ids, through jobs_state), then checked: a
-- DELETE testing `id IN (JSON_TABLE ...)` row by row read the ids again for every job of
-- that state, so a purge of 100 ids among 50,000 failed jobs took 3 to 6 s.
DELETE job
FROM (
    SELECT wanted.id
    FROM JSON_TABLE(%(ids)s, '$[*]' COLUMNS (id VARBINARY(64) PATH '$')) AS wanted
    WHERE %(ids)s IS NOT NULL
    UNION ALL
    SELECT id FROM {prefix}jobs FORCE INDEX (jobs_state)
    WHERE %(ids)s IS NULL AND queue = %(queue)s AND state = %(stored)s
) AS doomed
STRAIGHT_JOIN {prefix}jobs AS job ON job.id = doomed.id
WHERE job.queue = %(queue)s
  AND job.state = %(stored)s
  AND (CASE WHEN job.state = 'pending' AND job.available_at > {now} THEN 'delayed'
            ELSE job.state END) = %(state)s;

-- name: prune
-- Delete up to batch of a queue's jobs that finished more than older_than seconds ago.
-- The driver repeats it until a batch comes back short: each batch is its own short
-- transaction, so a backlog of a million old jobs never becomes one huge delete. The batch is
-- picked first, from jobs_finished, passing over rows locked elsewhere (SKIP LOCKED: two
-- workers pruning share the work), then deleted by primary key: a plain DELETE may scan a
-- small table whole and wait behind a row of a caller's open transaction.
DELETE job
FROM (
    SELECT id FROM {prefix}jobs
    WHERE queue = %(queue)s
      AND state IN ('succeeded', 'failed', 'cancelled')
      AND finished_at < {now} - %(older_than)s
    LIMIT %(batch)s
    FOR UPDATE SKIP LOCKED
) AS doomed
STRAIGHT_JOIN {prefix}jobs AS job ON job.id = doomed.id;

-- name: record_stats
-- Add to one worker's running totals, creating its row on first use.
INSERT INTO {prefix}workers (name, processed, succeeded, failed, retried)
VALUES (%(worker)s, %(processed)s, %(succeeded)s, %(failed)s, %(retried)s)
ON DUPLICATE KEY UPDATE
    processed = processed + VALUES(processed),
    succeeded = succeeded + VALUES(succeeded),
    failed = failed + VALUES(failed),
    retried = retried + VALUES(retried);

-- name: worker_stats
-- Every worker's running totals.
SELECT name, processed, succeeded, failed, retried FROM {prefix}workers;

-- name: beat
-- Note that a worker process is alive now; its first beat records when it started.
INSERT INTO {prefix}worker_processes (identity, worker, started_at, seen_at)
VALUES (%(identity)s, %(worker)s, {now}, {now})
ON DUPLICATE KEY UPDATE worker = VALUES(worker), seen_at = VALUES(seen_at);

-- name: beat_stopping
-- Forget a worker process that stopped cleanly, and any not heard from for a day.
DELETE FROM {prefix}worker_processes WHERE identity = %(identity)s OR seen_at < {now} - 86400;

-- name: alive
-- The worker processes heard from in the last `within` seconds, oldest first.
SELECT identity, worker, started_at, seen_at
FROM {prefix}worker_processes
WHERE seen_at >= {now} - %(within)s
ORDER BY started_at, identity;

-- name: wait
-- Look on the server, every `every` seconds, until a queue may have a job due; MariaDB only.
-- What an idle worker runs instead of polling from its process: one round trip per event, or
-- per `ticks` looks, and a sleeping server thread in between. Each look reads the newest job
-- id (the primary key's last entry: no row is read), and only when it moved on (a push) runs
-- wait_probe's probe again, so a look costs next to nothing. The probe runs on the first
-- look too, which sees what a push with an older id (a client clock behind), a retry or a
-- lease or delay running out made due. Every statement reads anew under READ COMMITTED; now
-- moves on with the server's elapsed time. Reads are SELECT ... INTO: SET x = (SELECT ...)
-- would be a locking read, and wait for a row a reserve holds. It returns the sighting once
-- that is neither empty nor `futile` (what last woke the worker for a reserve that then found
-- nothing: a job another reserve holds locked, a clock that disagrees), or after `ticks`
-- looks. MySQL runs compound statements only inside stored programs, so there the driver
-- polls wait_probe itself. The loader splits a block where a line ends with ';', so the
-- statements inside start their line with ';'.
BEGIN NOT ATOMIC
    DECLARE started DOUBLE DEFAULT UNIX_TIMESTAMP(SYSDATE(6))
    ; DECLARE now_at DOUBLE
    ; DECLARE tick INT DEFAULT 0
    ; DECLARE newest, latest VARBINARY(64)
    ; DECLARE seen LONGTEXT DEFAULT ''
    ; look: LOOP
        SELECT MAX(id) INTO latest FROM {prefix}jobs
        ; IF tick = 0 OR NOT latest <=> newest THEN
            SET newest = latest
            ; SET now_at = {now} + UNIX_TIMESTAMP(SYSDATE(6)) - started
            ; SELECT COALESCE(GROUP_CONCAT(
                       probe.queue, ' ', COALESCE(probe.head_at, '-'), ' ',
                       COALESCE(probe.newest_at, '-') ORDER BY probe.queue SEPARATOR '|'), '')
            INTO seen
            FROM (
                SELECT wanted.queue AS queue,
                       (SELECT job.due_at FROM {prefix}jobs AS job
                        WHERE job.ready_queue = wanted.queue
                        ORDER BY job.priority DESC, job.due_at
                        LIMIT 1) AS head_at,
                       (SELECT job.available_at FROM {prefix}jobs AS job FORCE INDEX (jobs_state)
                        WHERE job.queue = wanted.queue AND job.state = 'pending'
                        ORDER BY job.id DESC
                        LIMIT 1) AS newest_at
                FROM JSON_TABLE(%(queues)s, '$[*]' COLUMNS (queue VARBINARY(255) PATH '$'))
                    AS wanted
            ) AS probe
            WHERE probe.head_at <= now_at OR probe.newest_at <= now_at
        ; END IF
        ; IF (seen <> '' AND seen <> %(futile)s) OR tick >= %(ticks)s THEN
            LEAVE look
        ; END IF
        ; DO SLEEP(%(every)s)
        ; SET tick = tick + 1
    ; END LOOP
    ; SELECT seen AS sighting
; END

-- name: wait_probe
-- Whether a queue may have a job due since the last reserve: what an idle worker polls on MySQL.
-- A plain read (no lock): two index dives per queue, each stopping at its first entry, so a
-- worker can run it every few milliseconds however many jobs wait. head_at: the first entry of
-- jobs_ready, the top priority's earliest job (pending, or reserved with its lease running out
-- then). newest_at: the queue's newest pending job (ids sort by creation time), so a push
-- below the top priority is seen too. Not "any entry with available_at <= now": in a
-- correlated subquery MariaDB cannot range-scan, and would read every delayed job each time.
-- A job a lower priority's delay or lease makes due waits for the next reserve instead.
-- The sighting names each queue with a due job, its head_at and newest_at ('' when none).
SELECT COALESCE(GROUP_CONCAT(
           probe.queue, ' ', COALESCE(probe.head_at, '-'), ' ',
           COALESCE(probe.newest_at, '-') ORDER BY probe.queue SEPARATOR '|'), '') AS sighting
FROM (
    SELECT wanted.queue AS queue,
           (SELECT job.due_at FROM {prefix}jobs AS job
            WHERE job.ready_queue = wanted.queue
            ORDER BY job.priority DESC, job.due_at
            LIMIT 1) AS head_at,
           (SELECT job.available_at FROM {prefix}jobs AS job FORCE INDEX (jobs_state)
            WHERE job.queue = wanted.queue AND job.state = 'pending'
            ORDER BY job.id DESC
            LIMIT 1) AS newest_at
    FROM JSON_TABLE(%(queues)s, '$[*]' COLUMNS (queue VARBINARY(255) PATH '$')) AS wanted
) AS probe
WHERE probe.head_at <= {now} OR probe.newest_at <= {now};

-- name: durability
-- The server settings that decide whether a push that returned survives a crash.
SELECT @@GLOBAL.innodb_flush_log_at_trx_commit AS flush_log_at_trx_commit,
       @@GLOBAL.log_bin AS log_bin,
       @@GLOBAL.sync_binlog AS sync_binlog;

-- name: cancel
-- Cancel the jobs in ids: a pending (or delayed) one becomes cancelled now, a reserved one is
-- marked for its worker to stop (cancel = 1). Returns the ids of the unfinished jobs found.
-- A single-table UPDATE assigns left to right: state changes last, after what reads it.
SELECT job.id AS id
FROM JSON_TABLE(%(ids)s, '$[*]' COLUMNS (id VARBINARY(64) PATH '$')) AS wanted
STRAIGHT_JOIN {prefix}jobs AS job ON job.id = wanted.id
WHERE job.state IN ('pending', 'reserved')
FOR UPDATE;
UPDATE JSON_TABLE(%(ids)s, '$[*]' COLUMNS (id VARBINARY(64) PATH '$')) AS wanted
STRAIGHT_JOIN {prefix}jobs AS job ON job.id = wanted.id
SET job.cancel = 1,
    job.finished_at = IF(job.state = 'reserved', job.finished_at, {now}),
    job.unique_slot = IF(job.state = 'reserved', job.unique_slot,
                         CONCAT(X'00', job.id)),
    job.state = IF(job.state = 'reserved', job.state, 'cancelled')
WHERE job.state IN ('pending', 'reserved');

-- name: cancelling
-- Of the jobs in items ([id, token]) still reserved under their token, those marked cancel.
SELECT job.id AS id
FROM JSON_TABLE(%(items)s, '$[*]' COLUMNS (
    id    VARBINARY(64) PATH '$[0]',
    token VARBINARY(64) PATH '$[1]'
)) AS item
STRAIGHT_JOIN {prefix}jobs AS job ON job.id = item.id AND job.reservation = item.token
WHERE job.state = 'reserved' AND job.cancel = 1;

-- name: pause
-- Pause (paused = 1) or resume (0) a queue.
INSERT INTO {prefix}queues (name, paused) VALUES (%(queue)s, %(paused)s)
ON DUPLICATE KEY UPDATE paused = VALUES(paused);

-- name: paused
-- Which of queues are paused.
SELECT name FROM {prefix}queues
WHERE name IN (
    SELECT wanted.queue
    FROM JSON_TABLE(%(queues)s, '$[*]' COLUMNS (queue VARBINARY(255) PATH '$')) AS wanted
) AND paused = 1;

-- name: mark_tick
-- Record schedule's tick at tick as job job_id, unless a later tick is recorded already.
-- job_id is set before tick: MySQL assigns left to right, each seeing the earlier ones.
INSERT INTO {prefix}schedule_ticks (name, tick, job_id)
VALUES (%(schedule)s, %(tick)s, %(job_id)s)
ON DUPLICATE KEY UPDATE
    job_id = IF(VALUES(tick) > tick, VALUES(job_id), job_id),
    tick = GREATEST(tick, VALUES(tick));

-- name: ticks
-- The latest tick recorded for each of schedules.
SELECT name, tick, job_id FROM {prefix}schedule_ticks
WHERE name IN (
    SELECT wanted.name
    FROM JSON_TABLE(%(schedules)s, '$[*]' COLUMNS (name VARBINARY(255) PATH '$')) AS wanted
);

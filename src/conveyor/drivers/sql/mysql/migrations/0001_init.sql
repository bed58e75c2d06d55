-- The jobs table, its indexes, and the worker totals (InnoDB; MariaDB 10.8+, MySQL 8.0+).
--
-- Times are DOUBLE seconds since the epoch. `state` holds only what is stored: 'delayed' is a
-- pending job whose available_at is still ahead, worked out when read. While a job is
-- reserved, available_at is when its lease runs out, so one index serves due jobs and
-- expired leases alike.
--
-- Names, ids and tokens are VARBINARY: compared byte for byte, so 'Q', 'q' and 'q ' are three
-- queues whatever the server's default collation (utf8mb4 collations ignore case or
-- trailing spaces). Text that is only stored (payload, meta, error) is utf8mb4.
--
-- MySQL commits DDL at once, so this script cannot be rolled back: it is written to be run
-- again after a partial failure (IF NOT EXISTS), and the driver's migration lock keeps two
-- processes from running it at the same moment.

CREATE TABLE IF NOT EXISTS {prefix}jobs (
    id            VARBINARY(64)  NOT NULL,
    queue         VARBINARY(255) NOT NULL,
    name          VARBINARY(255) NOT NULL,
    payload       LONGTEXT       NOT NULL,  -- JSON text, stored as pushed
    state         VARBINARY(16)  NOT NULL DEFAULT 'pending',
    attempt       INT            NOT NULL DEFAULT 0,
    max_attempts  INT            NOT NULL,
    priority      INT            NOT NULL DEFAULT 0,
    created_at    DOUBLE         NOT NULL,
    available_at  DOUBLE         NOT NULL,
    timeout       DOUBLE         NULL,
    retry_delay   TEXT           NULL,      -- a retry policy's JSON, never read here
    unique_key    TEXT           NULL,
    meta          MEDIUMTEXT     NOT NULL,  -- JSON object
    reservation   VARBINARY(64)  NULL,      -- the token of the current or last reserve
    worker        VARBINARY(255) NULL,
    finished_at   DOUBLE         NULL,
    error         MEDIUMTEXT     NULL,      -- JSON of ErrorInfo.to_dict()
    -- MySQL has no partial indexes; these generated columns stand in for them. Both are NULL
    -- once a job is finished, and NULLs neither collide in a unique index nor match `=`.
    -- The queue again while the job is unfinished: the first column of jobs_ready.
    ready_queue   VARBINARY(255)
                  AS (IF(state IN ('pending', 'reserved'), queue, NULL)) STORED,
    -- A digest of the unique key while the job is unfinished: jobs_unique lets one
    -- unfinished job hold a (queue, name, unique) key, and keys of any length fit the index.
    unique_active BINARY(32)
                  AS (IF(state IN ('pending', 'reserved'), UNHEX(SHA2(unique_key, 256)), NULL))
                  STORED,
    PRIMARY KEY (id),
    CONSTRAINT {prefix}jobs_state_known
        CHECK (state IN ('pending', 'reserved', 'succeeded', 'failed', 'cancelled')),
    -- reserve: a queue's best due job is the first entry with available_at <= now. Finished
    -- jobs have no ready_queue, so a million of them are never scanned here.
    KEY jobs_ready (ready_queue, priority DESC, available_at, id),
    UNIQUE KEY jobs_unique (queue, name, unique_active),
    -- reserve reads its batch back by token.
    KEY jobs_reservation (reservation),
    -- list_jobs (oldest first by id), purge and counts.
    KEY jobs_state (queue, state, id),
    -- prune: the finished jobs of a queue, oldest first.
    KEY jobs_finished (queue, state, finished_at)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE IF NOT EXISTS {prefix}workers (
    name      VARBINARY(255) NOT NULL,
    processed BIGINT         NOT NULL DEFAULT 0,
    succeeded BIGINT         NOT NULL DEFAULT 0,
    failed    BIGINT         NOT NULL DEFAULT 0,
    retried   BIGINT         NOT NULL DEFAULT 0,
    PRIMARY KEY (name)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

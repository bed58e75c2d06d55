-- Two changes to the jobs table. MySQL commits DDL at once, so each step runs only where it is
-- still needed, and a migration that failed half-way runs again cleanly. A statement that
-- starts with /* MariaDB */ or /* MySQL */ runs on that server only (the driver skips it on the
-- other): MariaDB has IF [NOT] EXISTS on ALTER TABLE's clauses and anonymous blocks; MySQL 8.0
-- has neither, so its steps read information_schema first and prepare the ALTER. MariaDB never
-- reads information_schema here: it materializes the rows in an Aria temporary table, and
-- 10.11.19 crashed (signal 11 in ha_maria::drop_table, freeing one) running such a migration
-- step while many clients disconnected (docs/drivers.md).
--
-- rescued: how many times the job was taken back from a worker that stopped renewing its lease
-- (crashed, killed, frozen). alone: 1 while a worker runs the job with nothing beside it; a
-- death is charged to a job as an attempt only then (see JobInfo in job.py).
--
-- reserved_at and lease_expires_at: when the current (or last) reservation was made and when
-- its lease runs out, NULL once released; available_at keeps when the job became due, also
-- while it is reserved. due_at is when a job next needs a reserve: its lease end while it is
-- reserved, else its due time; jobs_ready now orders by it, so one index still serves due
-- jobs and expired leases alike.
--
-- unique_slot replaces unique_active in jobs_unique. unique_active was NULL for every job
-- without a held key, and InnoDB locks the gap before a record of a unique index that allows
-- NULL: a transaction holding a unique key (a caller's REPEATABLE READ transaction that
-- pushed, or any duplicate check) blocked every other push to that queue and job name, whose
-- NULL entries sort into that gap. unique_slot is NOT NULL: the digest of the key while the
-- job is unfinished, else a digest of its id (a NUL byte first, which no unique key holds),
-- so every job has a slot of its own and a key's lookup locks that one record. It is a plain
-- column that the statements changing a job's state keep (MariaDB allows no NOT NULL on a
-- generated column).

/* MariaDB */ ALTER TABLE {prefix}jobs
    ADD COLUMN IF NOT EXISTS rescued INT NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS alone TINYINT NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS reserved_at DOUBLE NULL,
    ADD COLUMN IF NOT EXISTS lease_expires_at DOUBLE NULL,
    ADD COLUMN IF NOT EXISTS result LONGTEXT NULL,
    ADD COLUMN IF NOT EXISTS cancel TINYINT NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS unique_slot BINARY(32) NULL;

/* MySQL */ SET @conveyor_ddl = (
    SELECT IF(COUNT(*) = 0,
              'ALTER TABLE {prefix}jobs
                   ADD COLUMN rescued INT NOT NULL DEFAULT 0,
                   ADD COLUMN alone TINYINT NOT NULL DEFAULT 0,
                   ADD COLUMN reserved_at DOUBLE NULL,
                   ADD COLUMN lease_expires_at DOUBLE NULL,
                   ADD COLUMN result LONGTEXT NULL,
                   ADD COLUMN cancel TINYINT NOT NULL DEFAULT 0,
                   ADD COLUMN unique_slot BINARY(32) NULL',
              'DO 0')
    FROM information_schema.columns
    WHERE table_schema = DATABASE() AND table_name = '{prefix}jobs' AND column_name = 'rescued'
);
/* MySQL */ PREPARE conveyor_ddl FROM @conveyor_ddl;
/* MySQL */ EXECUTE conveyor_ddl;
/* MySQL */ DEALLOCATE PREPARE conveyor_ddl;

UPDATE {prefix}jobs
SET unique_slot = IF(state IN ('pending', 'reserved') AND unique_key IS NOT NULL,
                     UNHEX(SHA2(unique_key, 256)),
                     UNHEX(SHA2(CONCAT(X'00', id), 256))),
    -- Reserved jobs kept their lease end in available_at until now.
    lease_expires_at = IF(state = 'reserved', available_at, NULL)
WHERE unique_slot IS NULL;

-- The second step drops jobs_unique and adds it again: IF EXISTS and IF NOT EXISTS on one name in
-- one ALTER lose the index on MariaDB (the ADD is skipped, the index being there before the DROP).
-- So MariaDB runs the ALTER as it is, and an error 1060 (duplicate column name: due_at is there)
-- tells that it ran before: an ALTER TABLE is all or nothing.
/* MariaDB */ BEGIN NOT ATOMIC
    DECLARE CONTINUE HANDLER FOR 1060 BEGIN END; ALTER TABLE {prefix}jobs
        MODIFY COLUMN unique_slot BINARY(32) NOT NULL,
        ADD COLUMN due_at DOUBLE AS (IFNULL(lease_expires_at, available_at)) STORED,
        DROP INDEX jobs_unique,
        ADD UNIQUE KEY jobs_unique (queue, name, unique_slot),
        DROP COLUMN IF EXISTS unique_active,
        DROP INDEX jobs_ready,
        ADD KEY jobs_ready (ready_queue, priority DESC, due_at, id); END;

/* MySQL */ SET @conveyor_ddl = (
    SELECT IF(COUNT(*) = 1,
              'ALTER TABLE {prefix}jobs
                   MODIFY COLUMN unique_slot BINARY(32) NOT NULL,
                   ADD COLUMN due_at DOUBLE AS (IFNULL(lease_expires_at, available_at)) STORED,
                   DROP INDEX jobs_unique,
                   ADD UNIQUE KEY jobs_unique (queue, name, unique_slot),
                   DROP COLUMN unique_active,
                   DROP INDEX jobs_ready,
                   ADD KEY jobs_ready (ready_queue, priority DESC, due_at, id)',
              'DO 0')
    FROM information_schema.columns
    WHERE table_schema = DATABASE() AND table_name = '{prefix}jobs'
      AND column_name = 'unique_active'
);
/* MySQL */ PREPARE conveyor_ddl FROM @conveyor_ddl;
/* MySQL */ EXECUTE conveyor_ddl;
/* MySQL */ DEALLOCATE PREPARE conveyor_ddl;

-- Worker processes alive (see Driver.beat): one row per process, "name:host:pid".
CREATE TABLE IF NOT EXISTS {prefix}worker_processes (
    identity   VARBINARY(512) NOT NULL,
    worker     VARBINARY(255) NOT NULL,
    started_at DOUBLE         NOT NULL,
    seen_at    DOUBLE         NOT NULL,
    PRIMARY KEY (identity)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- Paused queues (see Driver.pause).
CREATE TABLE IF NOT EXISTS {prefix}queues (
    name   VARBINARY(255) NOT NULL,
    paused TINYINT        NOT NULL DEFAULT 0,
    PRIMARY KEY (name)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

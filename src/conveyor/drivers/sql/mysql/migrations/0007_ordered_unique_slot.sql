-- A job without a held unique key gets X'00' followed by its id as its unique_slot, in place of
-- that string's SHA-256 digest (migrations/0002), and jobs_unique puts those jobs after every
-- held key (its first column, keyless, is 1 for them). Ids grow with time, so a batch's slots
-- go in at the end of their queue and job name, one page after the other, where the digests
-- went in at random places of that UNIQUE index, each a page to find and often to split
-- (push_many of 10,000 jobs: the insert statement's server time about 28 -> 21 µs a job here).
--
-- 0002's reason stands: every job has a slot of its own and none is NULL, so a key's lookup
-- locks that one record. And the jobs without a key now go in just before the next queue and
-- name's oldest keyless job (or the index's end), never before a held key: a transaction that
-- checked a held key as a duplicate (a push of it inside a caller's transaction) locks the
-- gap before that key's record, where keyless jobs never go. With the slot ordered but the
-- index as it was, keyless pushes would go in just before a queue and name's first held key,
-- and such a transaction would hold all of them back until it ends.
--
-- The slot is 1 + 64 bytes wide at most (ids are up to 64 characters). Slots written before
-- keep their 32-byte digests, which no new slot can equal; a job's slot is its id's again once
-- it finishes. This rebuilds the table (MariaDB cannot change a column's type in place); it runs
-- only where still needed, so a migration that failed half-way runs again cleanly: on MariaDB,
-- error 1060 (duplicate column name: keyless is there) tells that the ALTER ran before, with no
-- read of information_schema; MySQL reads it first (see migrations/0002).
/* MariaDB */ BEGIN NOT ATOMIC
    DECLARE CONTINUE HANDLER FOR 1060 BEGIN END; ALTER TABLE {prefix}jobs
        MODIFY COLUMN unique_slot VARBINARY(65) NOT NULL,
        ADD COLUMN keyless TINYINT
            AS (IF(state IN ('pending', 'reserved') AND unique_key IS NOT NULL, 0, 1)) STORED,
        DROP INDEX jobs_unique,
        ADD UNIQUE KEY jobs_unique (keyless, queue, name, unique_slot); END;

/* MySQL */ SET @conveyor_ddl = (
    SELECT IF(COUNT(*) = 0,
              'ALTER TABLE {prefix}jobs
                   MODIFY COLUMN unique_slot VARBINARY(65) NOT NULL,
                   ADD COLUMN keyless TINYINT
                       AS (IF(state IN (''pending'', ''reserved'') AND unique_key IS NOT NULL, 0, 1))
                       STORED,
                   DROP INDEX jobs_unique,
                   ADD UNIQUE KEY jobs_unique (keyless, queue, name, unique_slot)',
              'DO 0')
    FROM information_schema.columns
    WHERE table_schema = DATABASE() AND table_name = '{prefix}jobs' AND column_name = 'keyless'
);
/* MySQL */ PREPARE conveyor_ddl FROM @conveyor_ddl;
/* MySQL */ EXECUTE conveyor_ddl;
/* MySQL */ DEALLOCATE PREPARE conveyor_ddl;

-- How many times each job was taken back from a worker that stopped renewing its lease
-- (crashed, killed, frozen). A job rescued before runs alone, and only then is a death charged
-- to it as an attempt: see JobInfo in job.py.
--
-- MySQL commits DDL at once, so the column is added only where it is missing (a migration
-- that failed half-way runs again cleanly); MySQL 8.0 has no ADD COLUMN IF NOT EXISTS, hence
-- the prepared statement.

SET @conveyor_ddl = (
    SELECT IF(COUNT(*) = 0,
              'ALTER TABLE {prefix}jobs ADD COLUMN rescued INT NOT NULL DEFAULT 0',
              'DO 0')
    FROM information_schema.columns
    WHERE table_schema = DATABASE() AND table_name = '{prefix}jobs' AND column_name = 'rescued'
);
PREPARE conveyor_ddl FROM @conveyor_ddl;
EXECUTE conveyor_ddl;
DEALLOCATE PREPARE conveyor_ddl;

-- list_jobs with a job name (the dashboard's filter): one page of the jobs of one name in one
-- state, oldest first, read from this index however many other jobs the state holds. MySQL
-- has no partial index, so every change of state writes to it (sqlite and postgres keep it
-- to failed and cancelled jobs). Run again cleanly after a partial failure (MySQL 8.0 has no
-- CREATE INDEX IF NOT EXISTS).
SET @conveyor_ddl = (
    SELECT IF(COUNT(*) = 0, 'ALTER TABLE {prefix}jobs ADD KEY jobs_named (queue, state, name, id)',
              'DO 0')
    FROM information_schema.statistics
    WHERE table_schema = DATABASE() AND table_name = '{prefix}jobs' AND index_name = 'jobs_named'
);
PREPARE conveyor_ddl FROM @conveyor_ddl;
EXECUTE conveyor_ddl;
DEALLOCATE PREPARE conveyor_ddl;

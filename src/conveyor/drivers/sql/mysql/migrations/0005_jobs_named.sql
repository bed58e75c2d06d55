-- list_jobs with a job name (the dashboard's filter): one page of the jobs of one name in one
-- state, oldest first, read from this index however many other jobs the state holds. MySQL
-- has no partial index, so every change of state writes to it (sqlite and postgres keep it
-- to failed and cancelled jobs). Run again cleanly after a partial failure: IF NOT EXISTS on
-- MariaDB; MySQL 8.0 has none, hence its prepared statement, whose information_schema read
-- MariaDB never runs (see migrations/0002).
/* MariaDB */ ALTER TABLE {prefix}jobs ADD KEY IF NOT EXISTS jobs_named (queue, state, name, id);

/* MySQL */ SET @conveyor_ddl = (
    SELECT IF(COUNT(*) = 0, 'ALTER TABLE {prefix}jobs ADD KEY jobs_named (queue, state, name, id)',
              'DO 0')
    FROM information_schema.statistics
    WHERE table_schema = DATABASE() AND table_name = '{prefix}jobs' AND index_name = 'jobs_named'
);
/* MySQL */ PREPARE conveyor_ddl FROM @conveyor_ddl;
/* MySQL */ EXECUTE conveyor_ddl;
/* MySQL */ DEALLOCATE PREPARE conveyor_ddl;

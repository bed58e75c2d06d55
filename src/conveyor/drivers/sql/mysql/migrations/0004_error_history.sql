-- errors: the error of each failed attempt, oldest first, as a JSON array of objects (attempt,
-- at, type, message, traceback), the last 20 kept (see JobInfo.errors). Written by release
-- and fail only, never by a success; read by get only. Run again cleanly after a partial
-- failure: IF NOT EXISTS on MariaDB; MySQL 8.0 has none, hence its prepared statement, whose
-- information_schema read MariaDB never runs (see migrations/0002).
/* MariaDB */ ALTER TABLE {prefix}jobs ADD COLUMN IF NOT EXISTS errors LONGTEXT NULL;

/* MySQL */ SET @conveyor_ddl = (
    SELECT IF(COUNT(*) = 0, 'ALTER TABLE {prefix}jobs ADD COLUMN errors LONGTEXT NULL', 'DO 0')
    FROM information_schema.columns
    WHERE table_schema = DATABASE() AND table_name = '{prefix}jobs' AND column_name = 'errors'
);
/* MySQL */ PREPARE conveyor_ddl FROM @conveyor_ddl;
/* MySQL */ EXECUTE conveyor_ddl;
/* MySQL */ DEALLOCATE PREPARE conveyor_ddl;

-- The latest tick each schedule pushed and its job (see Driver.mark_tick).
CREATE TABLE {prefix}schedule_ticks (
    name   TEXT PRIMARY KEY,
    tick   REAL NOT NULL,
    job_id TEXT NOT NULL
);

-- The latest tick each schedule pushed and its job (see Driver.mark_tick).
CREATE TABLE {prefix}schedule_ticks (
    name   text PRIMARY KEY,
    tick   double precision NOT NULL,
    job_id text NOT NULL
);

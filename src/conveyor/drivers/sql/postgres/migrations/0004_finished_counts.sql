-- Finished jobs counted without reading them: `counts` reads live jobs (pending, reserved)
-- through the jobs_state index and adds finished ones from these deltas. Triggers append one
-- row per statement, queue and state (never updating a shared row, so settling workers do not
-- wait on each other), and `counts` folds the rows of the queues it reads into one per state.
CREATE TABLE {prefix}finished_counts (
    queue text NOT NULL,
    state text NOT NULL,
    n     bigint NOT NULL
);
CREATE INDEX {prefix}finished_counts_queue ON {prefix}finished_counts (queue, state);

CREATE FUNCTION {prefix}count_finished() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        INSERT INTO {prefix}finished_counts (queue, state, n)
        SELECT queue, state, -count(*) FROM gone
        WHERE state IN ('succeeded', 'failed', 'cancelled')
        GROUP BY queue, state;
    END IF;
    IF TG_OP IN ('UPDATE', 'INSERT') THEN
        INSERT INTO {prefix}finished_counts (queue, state, n)
        SELECT queue, state, count(*) FROM came
        WHERE state IN ('succeeded', 'failed', 'cancelled')
        GROUP BY queue, state;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER {prefix}count_finished_insert AFTER INSERT ON {prefix}jobs
    REFERENCING NEW TABLE AS came
    FOR EACH STATEMENT EXECUTE FUNCTION {prefix}count_finished();
CREATE TRIGGER {prefix}count_finished_update AFTER UPDATE ON {prefix}jobs
    REFERENCING OLD TABLE AS gone NEW TABLE AS came
    FOR EACH STATEMENT EXECUTE FUNCTION {prefix}count_finished();
CREATE TRIGGER {prefix}count_finished_delete AFTER DELETE ON {prefix}jobs
    REFERENCING OLD TABLE AS gone
    FOR EACH STATEMENT EXECUTE FUNCTION {prefix}count_finished();

INSERT INTO {prefix}finished_counts (queue, state, n)
SELECT queue, state, count(*) FROM {prefix}jobs
WHERE state IN ('succeeded', 'failed', 'cancelled')
GROUP BY queue, state;

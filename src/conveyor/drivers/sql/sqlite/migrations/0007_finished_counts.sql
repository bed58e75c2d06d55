-- Finished jobs counted without reading them: `counts` reads live jobs (pending, reserved)
-- through the jobs_state index and adds the finished ones from this table, one row per queue
-- and finished state, kept by triggers as jobs enter or leave a finished state (settled,
-- cancelled, retried, purged, pruned). SQLite has one writer at a time, so the shared rows
-- cost no waiting; a push (a pending job) never fires them.
CREATE TABLE {prefix}finished_counts (
    queue TEXT NOT NULL,
    state TEXT NOT NULL,
    n     INTEGER NOT NULL,
    PRIMARY KEY (queue, state)
);

CREATE TRIGGER {prefix}finished_in AFTER UPDATE OF state ON {prefix}jobs
WHEN new.state IN ('succeeded', 'failed', 'cancelled') AND old.state IS NOT new.state
BEGIN
    INSERT INTO {prefix}finished_counts (queue, state, n) VALUES (new.queue, new.state, 1)
    ON CONFLICT (queue, state) DO UPDATE SET n = n + 1;
END;

CREATE TRIGGER {prefix}finished_out AFTER UPDATE OF state ON {prefix}jobs
WHEN old.state IN ('succeeded', 'failed', 'cancelled') AND old.state IS NOT new.state
BEGIN
    UPDATE {prefix}finished_counts SET n = n - 1 WHERE queue = old.queue AND state = old.state;
END;

CREATE TRIGGER {prefix}finished_inserted AFTER INSERT ON {prefix}jobs
WHEN new.state IN ('succeeded', 'failed', 'cancelled')
BEGIN
    INSERT INTO {prefix}finished_counts (queue, state, n) VALUES (new.queue, new.state, 1)
    ON CONFLICT (queue, state) DO UPDATE SET n = n + 1;
END;

CREATE TRIGGER {prefix}finished_deleted AFTER DELETE ON {prefix}jobs
WHEN old.state IN ('succeeded', 'failed', 'cancelled')
BEGIN
    UPDATE {prefix}finished_counts SET n = n - 1 WHERE queue = old.queue AND state = old.state;
END;

INSERT INTO {prefix}finished_counts (queue, state, n)
SELECT queue, state, count(*) FROM {prefix}jobs
WHERE state IN ('succeeded', 'failed', 'cancelled')
GROUP BY queue, state;

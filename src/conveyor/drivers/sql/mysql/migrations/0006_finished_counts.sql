-- Finished jobs counted without reading them: `counts` reads live jobs (pending, reserved)
-- through the jobs_state index and adds the finished ones from this table, kept by triggers
-- as jobs enter or leave a finished state (settled, cancelled, retried, purged, pruned).
-- Each connection adds to a slot of its own (CONNECTION_ID() % 16), so workers settling jobs
-- of one queue at once seldom wait on the same row; `counts` sums the slots. A push (an
-- INSERT of a pending job) fires nothing. The trigger bodies keep each ';' inside a line:
-- the migration runner splits statements where ';' ends one.
CREATE TABLE IF NOT EXISTS {prefix}finished_counts (
    queue VARBINARY(255) NOT NULL,
    state VARBINARY(16)  NOT NULL,
    slot  SMALLINT       NOT NULL,
    n     BIGINT         NOT NULL,
    PRIMARY KEY (queue, state, slot)
) ENGINE = InnoDB;

DROP TRIGGER IF EXISTS {prefix}finished_update;
CREATE TRIGGER {prefix}finished_update AFTER UPDATE ON {prefix}jobs FOR EACH ROW
BEGIN
    IF NOT (OLD.state <=> NEW.state) THEN
        IF NEW.state IN ('succeeded', 'failed', 'cancelled') THEN
            INSERT INTO {prefix}finished_counts (queue, state, slot, n)
            VALUES (NEW.queue, NEW.state, CONNECTION_ID() % 16, 1)
            ON DUPLICATE KEY UPDATE n = n + 1; END IF; IF OLD.state IN ('succeeded', 'failed', 'cancelled') THEN
            INSERT INTO {prefix}finished_counts (queue, state, slot, n)
            VALUES (OLD.queue, OLD.state, CONNECTION_ID() % 16, -1)
            ON DUPLICATE KEY UPDATE n = n - 1; END IF; END IF; END;

DROP TRIGGER IF EXISTS {prefix}finished_delete;
CREATE TRIGGER {prefix}finished_delete AFTER DELETE ON {prefix}jobs FOR EACH ROW
BEGIN
    IF OLD.state IN ('succeeded', 'failed', 'cancelled') THEN
        INSERT INTO {prefix}finished_counts (queue, state, slot, n)
        VALUES (OLD.queue, OLD.state, CONNECTION_ID() % 16, -1)
        ON DUPLICATE KEY UPDATE n = n - 1; END IF; END;

-- The jobs finished before the triggers existed; run again (a partial failure), it starts over.
DELETE FROM {prefix}finished_counts;
INSERT INTO {prefix}finished_counts (queue, state, slot, n)
SELECT queue, state, 0, COUNT(*) FROM {prefix}jobs
WHERE state IN ('succeeded', 'failed', 'cancelled')
GROUP BY queue, state;

-- throughput (the dashboard's chart of the last hour) and prune: a queue's finished jobs by
-- finish time, with their state, so counting the last hour's reads only this index. Only
-- finished jobs have a finish time, so a push never writes to it.
CREATE INDEX {prefix}jobs_finished ON {prefix}jobs (queue, finished_at, state)
    WHERE finished_at IS NOT NULL;

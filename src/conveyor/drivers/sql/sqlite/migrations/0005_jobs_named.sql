-- list_jobs with a job name (the dashboard's filter) among failed and cancelled jobs: one
-- page of the jobs of one name, oldest first, read from this index however many other jobs
-- the state holds. Partial, so only a failure or a cancel writes to it, never a push, a
-- reserve or a success; a filter on the other states reads jobs_state in id order instead.
CREATE INDEX {prefix}jobs_named ON {prefix}jobs (queue, state, name, id)
    WHERE state IN ('failed', 'cancelled');

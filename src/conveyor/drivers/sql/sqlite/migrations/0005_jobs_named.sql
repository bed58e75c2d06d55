-- list_jobs with a job name (the dashboard's filter): one page of the jobs of one name in one
-- state, oldest first, read from this index however many other jobs the state holds.
CREATE INDEX {prefix}jobs_named ON {prefix}jobs (queue, state, name, id);

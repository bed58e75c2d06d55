-- rescued: how many times each job was taken back from a worker that stopped renewing its lease
-- (crashed, killed, frozen). alone: 1 while a worker runs the job with nothing beside it; a
-- death is charged to a job as an attempt only then (see JobInfo in job.py).

ALTER TABLE {prefix}jobs
    ADD COLUMN rescued integer NOT NULL DEFAULT 0,
    ADD COLUMN alone smallint NOT NULL DEFAULT 0;

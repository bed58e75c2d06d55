-- How many times each job was taken back from a worker that stopped renewing its lease
-- (crashed, killed, frozen). A job rescued before runs alone, and only then is a death charged
-- to it as an attempt: see JobInfo in job.py.

ALTER TABLE {prefix}jobs ADD COLUMN rescued integer NOT NULL DEFAULT 0;

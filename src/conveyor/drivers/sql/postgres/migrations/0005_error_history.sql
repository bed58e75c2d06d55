-- errors: the error of each failed attempt, oldest first, as the text of a JSON array of
-- objects (attempt, at, type, message, traceback), the last 20 kept (see JobInfo.errors).
-- Written by release and fail only, never by a success; read by get only.
ALTER TABLE {prefix}jobs ADD COLUMN errors text;

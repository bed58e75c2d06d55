-- Shared by fail.lua and release.lua: load_scripts (scripts.py) puts this file where a
-- script says `-- include: errors.lua`. It needs `rcall` (redis.call) defined before.

-- The job's error history (field errors, a JSON array, see JobInfo.errors) with `err` added
-- as the error of attempt `attempt`, the oldest dropped past MAX_ERRORS. A damaged history
-- starts over rather than fail the script.
local MAX_ERRORS = 20
local function add_error(key, err, attempt, at)
  local history = {}
  local stored = rcall('HGET', key, 'errors')
  if stored then
    local ok, parsed = pcall(cjson.decode, stored)
    if ok and type(parsed) == 'table' then
      history = parsed
    end
  end
  local ok, entry = pcall(cjson.decode, err)
  if not ok or type(entry) ~= 'table' then
    entry = {message = err}
  end
  entry.attempt = tonumber(attempt) or 0
  entry.at = tonumber(at)
  history[#history + 1] = entry
  while #history > MAX_ERRORS do
    table.remove(history, 1)
  end
  rcall('HSET', key, 'errors', cjson.encode(history))
end

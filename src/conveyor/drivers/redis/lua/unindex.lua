--[[
  unindex: drop from one slice of a state's index (list.lua) the ids of jobs that are gone or
  in another state; list_jobs runs it over the whole index, then reindex.lua over the sets,
  when the index holds another number of ids than the sets hold members. Such ids are left
  by an older version of the driver (its purge or prune deleted the job, its reserve or retry
  moved it, without a word to the index), and one of them would hide a job the index misses.

  KEYS[1] the index: pending_ids (the jobs in pending or delayed) or failed_ids (the failed)

  ARGV[1] job key prefix (the job's hash is prefix .. id)
  ARGV[2] the state the index is for: 'pending' or 'failed'
  ARGV[3] start after this id ('' for the first)
  ARGV[4] look at no more than this many ids

  Returns the last id looked at ('' once the walk reached the end). A job whose state is
  damaged (missing, not a state) counts as the index's, as list.lua counts it.
]]
local STATES = {pending = true, reserved = true, succeeded = true, failed = true, cancelled = true}
local rcall = redis.call
local index, prefix, own, after, slice = KEYS[1], ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])

local start = after == '' and '-' or '(' .. after
local ids = rcall('ZRANGEBYLEX', index, start, '+', 'LIMIT', 0, slice)
local stale = {}
for _, id in ipairs(ids) do
  local key = prefix .. id
  local state = rcall('HGET', key, 'state')
  if (STATES[state] and state ~= own) or (not state and rcall('EXISTS', key) == 0) then
    stale[#stale + 1] = id
  end
end
if #stale > 0 then
  rcall('ZREM', index, unpack(stale))
end
if #ids < slice then
  return ''
end
return ids[#ids]

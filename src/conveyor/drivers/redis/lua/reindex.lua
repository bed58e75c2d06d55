--[[
  reindex: add the ids of one slice of a state's set to its index (list.lua), after
  unindex.lua. list_jobs runs both over the index and the sets when the index holds another
  number of ids than they hold members: jobs stored before the index existed (an upgrade), or
  moved by an older version of the driver. A member whose job is gone, or is in another state
  (left by such a script), is dropped from the set rather than indexed: once done, the index
  and the sets hold the same ids.

  KEYS[1] the index: pending_ids (for pending and delayed) or failed_ids (for failed)
  KEYS[2] the set: pending (member = rank .. time .. id), delayed or failed (member = id)

  ARGV[1] 'pending' when KEYS[2] is the pending set, else 'ids'
  ARGV[2] ZSCAN cursor ('0' to start)
  ARGV[3] members per call (ZSCAN's COUNT)
  ARGV[4] job key prefix (the job's hash is prefix .. id)
  ARGV[5] the state the set's jobs are in: 'pending' or 'failed'

  Returns the next cursor ('0' once the set has been walked). A job whose state is damaged
  (missing, not a state) counts as the set's, as list.lua counts it.
]]
local STATES = {pending = true, reserved = true, succeeded = true, failed = true, cancelled = true}
local rcall = redis.call
local prefix, own = ARGV[4], ARGV[5]
local reply = rcall('ZSCAN', KEYS[2], ARGV[2], 'COUNT', ARGV[3])
local members, ids, stale = reply[2], {}, {}
for i = 1, #members, 2 do
  local id = members[i]
  if ARGV[1] == 'pending' then
    id = string.sub(id, 37)
  end
  local key = prefix .. id
  local state = rcall('HGET', key, 'state')
  if (STATES[state] and state ~= own) or (not state and rcall('EXISTS', key) == 0) then
    stale[#stale + 1] = members[i]
  else
    ids[#ids + 1] = 0
    ids[#ids + 1] = id
  end
end
for i = 1, #ids, 2000 do
  rcall('ZADD', KEYS[1], unpack(ids, i, math.min(i + 1999, #ids)))
end
for i = 1, #stale, 1000 do
  rcall('ZREM', KEYS[2], unpack(stale, i, math.min(i + 999, #stale)))
end
return reply[1]

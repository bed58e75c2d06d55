--[[
  reindex: add the ids of one slice of a state's set to its index (list.lua). list_jobs runs
  it over the sets when the index holds fewer ids than they hold members: jobs stored before
  the index existed (an upgrade), or by an older version of the driver. Every id seen is
  added, its job's hash there or not, so once done the index holds no fewer ids than the sets
  hold members; an id a concurrent script moved meanwhile is dropped again by list.lua.

  KEYS[1] the index: pending_ids (for pending and delayed) or failed_ids (for failed)
  KEYS[2] the set: pending (member = rank .. time .. id), delayed or failed (member = id)

  ARGV[1] 'pending' when KEYS[2] is the pending set, else 'ids'
  ARGV[2] ZSCAN cursor ('0' to start)
  ARGV[3] members per call (ZSCAN's COUNT)

  Returns the next cursor ('0' once the set has been walked).
]]
local rcall = redis.call
local reply = rcall('ZSCAN', KEYS[2], ARGV[2], 'COUNT', ARGV[3])
local members, ids = reply[2], {}
for i = 1, #members, 2 do
  local id = members[i]
  if ARGV[1] == 'pending' then
    id = string.sub(id, 37)
  end
  ids[#ids + 1] = 0
  ids[#ids + 1] = id
end
for i = 1, #ids, 2000 do
  rcall('ZADD', KEYS[1], unpack(ids, i, math.min(i + 1999, #ids)))
end
return reply[1]

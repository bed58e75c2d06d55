--[[
  reindex: add the ids of one slice of pending or delayed to pending_ids. list_jobs runs it
  over both sets when pending_ids holds fewer ids than they hold members: jobs stored before
  pending_ids existed (an upgrade), or pushed by an older version of the driver. Every id seen
  is added, its job's hash there or not, so once done pending_ids holds no fewer ids than the
  sets hold members; an id a concurrent reserve took meanwhile is dropped again by list.lua.

  KEYS[1] pending_ids ZSET, every score 0, member = id: the jobs in pending or delayed
  KEYS[2] the set: pending (member = rank .. time .. id) or delayed (member = id)

  ARGV[1] 'pending' or 'delayed', which set KEYS[2] is
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

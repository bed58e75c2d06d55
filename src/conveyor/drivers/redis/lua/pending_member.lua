-- Shared by cancel.lua, purge.lua, release.lua and retry.lua: load_scripts (scripts.py) puts
-- this file where a script says `-- include: pending_member.lua`. It needs `rcall`
-- (redis.call) and `pending` (the queue's pending set) defined before.

local ANY_RANK = '7fffffffffffffff'  -- priority 0: for a job whose rank field is damaged

-- A job's member in pending: rank, time as 20 characters, id (see driver.py).
local function member(rank, at, id)
  if type(rank) ~= 'string' or #rank ~= 16 then
    rank = ANY_RANK
  end
  return rank .. string.format('%020.6f', math.max(0, at)) .. id
end

-- The pending member of a job of this rank whose stored time is damaged: among the members
-- of its rank.
local function member_of(rank, id)
  if type(rank) ~= 'string' or #rank ~= 16 then
    rank = ANY_RANK
  end
  for _, m in ipairs(rcall('ZRANGEBYLEX', pending, '[' .. rank, '(' .. rank .. ':')) do
    if string.sub(m, 37) == id then
      return m
    end
  end
  return member(rank, 0, id)
end

-- The member in pending of a job whose rank and available_at fields read `rank` and `at`.
local function pending_member(rank, at, id)
  local time = tonumber(at)
  if time then
    return member(rank, time, id)
  end
  return member_of(rank, id)
end

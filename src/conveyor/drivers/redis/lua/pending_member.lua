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

-- The pending member of a job whose stored rank or time is damaged: among the members of its
-- rank, or with the rank itself damaged, among every member: the member keeps the rank the
-- job had when it joined pending, which a damaged field no longer tells (a scan of the set,
-- paid by damaged jobs only).
local function member_of(rank, id)
  if type(rank) == 'string' and #rank == 16 then
    for _, m in ipairs(rcall('ZRANGEBYLEX', pending, '[' .. rank, '(' .. rank .. ':')) do
      if string.sub(m, 37) == id then
        return m
      end
    end
    return member(rank, 0, id)
  end
  local cursor = '0'
  repeat
    local reply = rcall('ZSCAN', pending, cursor, 'COUNT', 1000)
    cursor = reply[1]
    for i = 1, #reply[2], 2 do
      if string.sub(reply[2][i], 37) == id then
        return reply[2][i]
      end
    end
  until cursor == '0'
  return member(rank, 0, id)
end

-- The member in pending of a job whose rank and available_at fields read `rank` and `at`.
local function pending_member(rank, at, id)
  local time = tonumber(at)
  if time and type(rank) == 'string' and #rank == 16 then
    return member(rank, time, id)
  end
  return member_of(rank, id)
end

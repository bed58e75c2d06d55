--[[
  counts: how many jobs of one queue are in each state; read-only, one consistent view.

  KEYS[1] pending    ZSET, every score 0, member = rank .. time .. id
  KEYS[2] delayed    ZSET of job ids by available_at
  KEYS[3] reserved   ZSET of job ids by lease end
  KEYS[4] succeeded  ZSET of job ids by finished_at
  KEYS[5] failed     ZSET of job ids by finished_at
  KEYS[6] cancelled  ZSET of job ids by finished_at

  No ARGV: "now" is the server's TIME.

  Returns {pending, delayed, reserved, succeeded, failed, oldest, cancelled}. A delayed job whose time
  has come counts as pending even before a reserve moves it; a job whose lease ran out counts
  as reserved until a reserve hands it out again. `oldest` is how long the oldest pending job
  has waited since it became due, as text ('' when none is pending): the earliest time among
  the first member of each rank in pending (members sort by rank, then time) and the due
  jobs still in delayed. One step per distinct priority, never a scan of the jobs.
]]
local RANKS_MAX = 1000
local rcall = redis.call
local clock = rcall('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local now_text = string.format('%.6f', now)

local earliest = nil
local function consider(at)
  if at and (earliest == nil or at < earliest) then
    earliest = at
  end
end

local due = rcall('ZRANGEBYSCORE', KEYS[2], '-inf', now_text, 'WITHSCORES', 'LIMIT', 0, 1)
consider(tonumber(due[2]))
local from = '-'
for _ = 1, RANKS_MAX do
  local first = rcall('ZRANGEBYLEX', KEYS[1], from, '+', 'LIMIT', 0, 1)[1]
  if not first then
    break
  end
  consider(tonumber(string.sub(first, 17, 36)))
  from = '(' .. string.sub(first, 1, 16) .. '~'  -- past every member of this rank
end

local oldest = ''
if earliest then
  oldest = string.format('%.6f', math.max(0, now - earliest))
end
return {
  rcall('ZCARD', KEYS[1]) + rcall('ZCOUNT', KEYS[2], '-inf', now_text),
  rcall('ZCOUNT', KEYS[2], '(' .. now_text, '+inf'),
  rcall('ZCARD', KEYS[3]),
  rcall('ZCARD', KEYS[4]),
  rcall('ZCARD', KEYS[5]),
  oldest,
  rcall('ZCARD', KEYS[6]),
}

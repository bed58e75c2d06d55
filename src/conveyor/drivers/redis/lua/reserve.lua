--[[
  reserve: take up to `limit` due jobs of one queue, best first; atomic.

  KEYS[1] pending    ZSET, every score 0, member = rank .. time .. id, so ZRANGEBYLEX walks
                     highest priority first, then earliest available, then by id
  KEYS[2] delayed    ZSET of job ids by available_at
  KEYS[3] reserved   ZSET of job ids by lease end
  KEYS[4] wake       LIST of wake-up tokens

  ARGV[1] job key prefix
  ARGV[2] now
  ARGV[3] lease end (now + lease)
  ARGV[4] reservation token
  ARGV[5] worker
  ARGV[6] limit (0 only moves due jobs and reports the head)
  ARGV[7] bound: take only members below it ('' for no bound). Used to merge several queues:
          the caller passes the best head of the other queues.
  ARGV[8..] the job fields to return, in order; one of them is 'attempt'

  Returns {head, job, job, ...}: `head` is the best member still due afterwards ('' if none)
  and each job is the list of its fields as they were BEFORE this reservation; the caller
  knows the new state, token, worker and lease end, and adds one to the attempt.
]]
local MOVE_MAX = 1000
local rcall = redis.call
local pending, delayed, reserved, wake = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local prefix, now, lease_end, token, worker = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local limit, bound = tonumber(ARGV[6]), ARGV[7]
local fields = {unpack(ARGV, 8)}

local function member(rank, at, id)
  return rank .. string.format('%020.6f', math.max(0, tonumber(at))) .. id
end

-- Large variadic calls go in slices: unpack() is limited by the Lua C stack.
local function call_in_slices(command, key, items)
  for i = 1, #items, 1000 do
    rcall(command, key, unpack(items, i, math.min(i + 999, #items)))
  end
end

-- Delayed jobs whose time has come join pending for good (at most MOVE_MAX per call, so one
-- call never stalls the server; the rest follow on the next call).
local due = rcall('ZRANGEBYSCORE', delayed, '-inf', now, 'LIMIT', 0, MOVE_MAX)
for _, id in ipairs(due) do
  local job = rcall('HMGET', prefix .. id, 'rank', 'available_at')
  if job[1] then
    rcall('ZADD', pending, 0, member(job[1], job[2], id))
  end
end
call_in_slices('ZREM', delayed, due)

-- Jobs whose lease ran out compete with pending ones for this call only: they stay reserved
-- (so their worker may still settle them) until a reserve actually hands them out. Lending
-- them to the pending set lets Redis order everything bytewise, as ZRANGEBYLEX does.
local lent = {}
local expired = rcall('ZRANGEBYSCORE', reserved, '-inf', now, 'WITHSCORES', 'LIMIT', 0, MOVE_MAX)
for i = 1, #expired, 2 do
  local id = expired[i]
  local rank = rcall('HGET', prefix .. id, 'rank')
  if rank then
    local m = member(rank, expired[i + 1], id)
    rcall('ZADD', pending, 0, m)
    lent[m] = true
  else
    rcall('ZREM', reserved, id)
  end
end

local chosen = {}
if limit > 0 then
  local upper = '+'
  if bound ~= '' then
    upper = '(' .. bound
  end
  chosen = rcall('ZRANGEBYLEX', pending, '-', upper, 'LIMIT', 0, limit)
  call_in_slices('ZREM', pending, chosen)
end
local head = rcall('ZRANGEBYLEX', pending, '-', '+', 'LIMIT', 0, 1)[1] or ''

for _, m in ipairs(chosen) do
  lent[m] = nil
end
local unused = {}
for m in pairs(lent) do
  unused[#unused + 1] = m
end
call_in_slices('ZREM', pending, unused)

local attempt_at
for i, name in ipairs(fields) do
  if name == 'attempt' then
    attempt_at = i
  end
end

local out, leases = {head}, {}
for _, m in ipairs(chosen) do
  local id = string.sub(m, 37)
  local key = prefix .. id
  local job = rcall('HMGET', key, unpack(fields))
  if job[attempt_at] then
    rcall('HSET', key, 'state', 'reserved', 'reservation', token, 'worker', worker,
      'available_at', lease_end, 'attempt', tonumber(job[attempt_at]) + 1)
    leases[#leases + 1] = lease_end
    leases[#leases + 1] = id
    out[#out + 1] = job
  end
end
call_in_slices('ZADD', reserved, leases)

-- Nothing due is left: tokens still queued would only wake workers for nothing.
if head == '' then
  rcall('DEL', wake)
end
return out

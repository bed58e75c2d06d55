--[[
  reserve: take up to `limit` due jobs of one queue, best first; atomic.

  KEYS[1] pending    ZSET, every score 0, member = rank .. time .. id, so ZRANGEBYLEX walks
                     highest priority first, then earliest available, then by id
  KEYS[2] delayed    ZSET of job ids by available_at
  KEYS[3] reserved   ZSET of job ids by lease end
  KEYS[4] wake       LIST of wake-up tokens
  KEYS[5] pending_ids ZSET, every score 0, member = id: the jobs in pending or delayed, for list_jobs

  ARGV[1] job key prefix
  ARGV[2] lease, in seconds (the lease ends that long after the server's TIME)
  ARGV[3] reservation token
  ARGV[4] worker
  ARGV[5] limit (0 only moves due jobs and reports the best members: see ARGV[7])
  ARGV[6] bound: take only members below it ('' for no bound). Used to merge several queues:
          the caller passes the first member of the other queues it leaves out.
  ARGV[7] with limit 0, how many of the best due members to return (jobs whose lease ran
          out among them); else ignored
  ARGV[8..] the job fields to return, in order

  Returns {head, job, job, ...}: `head` is the best member still due afterwards ('' if none)
  and each job is its id (from its key, which no damage to the hash can change), then its
  fields as this reservation left them. With limit 0: {head, member, ...}, the best ARGV[7]
  members due, best first (only {''} when none is).

  A pending job's attempt goes up by one. A job whose lease ran out is rescued: `rescued` goes
  up by one, and `attempt` only if it was running `alone` (see JobInfo in job.py); the alone
  mark is cleared.

  An entry whose job is in another state (finished, or reserved under another entry) is
  dropped, never handed out: a cancelled job stays cancelled. Damaged jobs (a field missing
  or not a number, the state itself included) are still reserved, with the damaged fields
  left as they are, so the worker can fail them with the reason; nothing read from a job can
  make the script fail, since Redis would keep the writes made before the failure.
]]
local MOVE_MAX = 1000
local STATES = {pending = true, reserved = true, succeeded = true, failed = true, cancelled = true}
local ANY_RANK = '7fffffffffffffff'  -- priority 0: for a job whose rank field is damaged
local rcall = redis.call
local pending, delayed, reserved, wake, index = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local prefix, lease, token, worker = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4]
local limit, bound = tonumber(ARGV[5]), ARGV[6]
local fields = {unpack(ARGV, 8)}
local clock = rcall('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000

local function member(rank, at, id)
  if type(rank) ~= 'string' or #rank ~= 16 then
    rank = ANY_RANK
  end
  return rank .. string.format('%020.6f', math.max(0, tonumber(at) or 0)) .. id
end

-- Large variadic calls go in slices: unpack() is limited by the Lua C stack.
local function call_in_slices(command, key, items)
  for i = 1, #items, 1000 do
    rcall(command, key, unpack(items, i, math.min(i + 999, #items)))
  end
end

-- Delayed jobs whose time has come join pending for good (at most MOVE_MAX per call, so one
-- call never stalls the server; the rest follow on the next call). An id whose job is gone
-- is only dropped, from the index too: there is nothing left to run or to list.
local due = rcall('ZRANGEBYSCORE', delayed, '-inf', now, 'WITHSCORES', 'LIMIT', 0, MOVE_MAX)
local moved = {}
for i = 1, #due, 2 do
  local id = due[i]
  if rcall('EXISTS', prefix .. id) == 1 then
    rcall('ZADD', pending, 0, member(rcall('HGET', prefix .. id, 'rank'), due[i + 1], id))
  else
    rcall('ZREM', index, id)
  end
  moved[#moved + 1] = id
end
call_in_slices('ZREM', delayed, moved)

-- Jobs whose lease ran out compete with pending ones for this call only: they stay reserved
-- (so their worker may still settle them) until a reserve actually hands them out. Lending
-- them to the pending set lets Redis order everything bytewise, as ZRANGEBYLEX does.
local lent = {}
local expired = rcall('ZRANGEBYSCORE', reserved, '-inf', now, 'WITHSCORES', 'LIMIT', 0, MOVE_MAX)
for i = 1, #expired, 2 do
  local id = expired[i]
  if rcall('EXISTS', prefix .. id) == 1 then
    local m = member(rcall('HGET', prefix .. id, 'rank'), expired[i + 1], id)
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
local best = rcall('ZRANGEBYLEX', pending, '-', '+', 'LIMIT', 0, limit > 0 and 1 or ARGV[7])
local head = best[1] or ''

local rescues = {}
for _, m in ipairs(chosen) do
  rescues[m] = lent[m]
  lent[m] = nil
end
local unused = {}
for m in pairs(lent) do
  unused[#unused + 1] = m
end
call_in_slices('ZREM', pending, unused)

local lease_end = string.format('%.6f', now + lease)
local now_text = string.format('%.6f', now)
local at = {}  -- field name -> its place in `fields`
for i, name in ipairs(fields) do
  at[name] = i
end

-- Each job's fields are read once, before its one write; what the write changes is patched
-- into the values returned, so the job costs one read and one write.
local out, leases, taken = {head}, {}, {}
if limit == 0 then
  out = #best > 0 and best or out
end
for _, m in ipairs(chosen) do
  local id = string.sub(m, 37)
  local key = prefix .. id
  taken[#taken + 1] = id
  local values = rcall('HMGET', key, unpack(fields))
  local found = false
  for i = 1, #fields do
    found = found or values[i] ~= false
  end
  local state = at.state and values[at.state]
  if STATES[state] and state ~= (rescues[m] and 'reserved' or 'pending') then
    -- The entry outlived its job's move (a script of an older version, or one that could
    -- not find the entry by the job's damaged fields): dropped, the job left as it is.
    if rescues[m] then
      rcall('ZREM', reserved, id)
    end
  elseif found or rcall('EXISTS', key) == 1 then
    local attempt, rescued = tonumber(values[at.attempt]), tonumber(values[at.rescued] or '0')
    local changes = {state = 'reserved', reservation = token, worker = worker,
      reserved_at = now_text, lease_expires_at = lease_end, alone = '0'}
    -- A damaged count is left as it is, for the worker to report.
    if attempt and (values[at.alone] == '1' or not rescues[m]) then
      changes.attempt = tostring(attempt + 1)
    end
    if rescued and rescues[m] then
      changes.rescued = tostring(rescued + 1)
    end
    local write = {}
    for name, value in pairs(changes) do
      write[#write + 1] = name
      write[#write + 1] = value
      if at[name] then
        values[at[name]] = value
      end
    end
    rcall('HSET', key, unpack(write))
    leases[#leases + 1] = lease_end
    leases[#leases + 1] = id
    table.insert(values, 1, id)
    out[#out + 1] = values
  end
end
call_in_slices('ZADD', reserved, leases)
call_in_slices('ZREM', index, taken)

-- Nothing due is left: tokens still queued would only wake workers for nothing.
if head == '' then
  rcall('DEL', wake)
end
return out

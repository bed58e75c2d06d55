--[[
  push: store a batch of new jobs in one queue; atomic as a whole.

  KEYS[1] pending    ZSET, every score 0, member = rank .. time .. id (see driver.py)
  KEYS[2] delayed    ZSET of job ids by available_at
  KEYS[3] unique     HASH unique key -> id of the unfinished job holding it
  KEYS[4] wake       LIST of wake-up tokens that idle workers BLPOP
  KEYS[5] pending_ids ZSET, every score 0, member = id: the jobs in pending or delayed, for list_jobs

  ARGV[1] job key prefix (the job's hash is prefix .. id)
  ARGV[2] the jobs, as one JSON array of runs of jobs alike but for id and payload:
          [delay, rank, unique key ('' for none), fields, items], where fields is
          [field, value, ...], the run's hash without its times, id and payload, and items
          is [id, payload, id, payload, ...], each job's in turn. A job with a unique key
          is a run of its own. A batch from push_many is then one run: the client encodes
          two strings per job, not twenty, and the script decodes as many.

  Times are the server's (TIME): each job is created now and due `delay` seconds later.
  Returns the id of each job in order: its own, or that of the job already holding its
  unique key (storing nothing), or its own again when a job with this id already exists (a
  push retried after a lost reply stores nothing twice). Only input made by the driver is
  read before the writes, so the script cannot fail half-way.
]]
local WAKE_MAX = 64
local rcall = redis.call
local pending, delayed, unique, wake, index = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local prefix = ARGV[1]
local clock = rcall('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000

local function stamp(t)
  return string.format('%.6f', t)
end

local function member(rank, at, id)
  return rank .. string.format('%020.6f', math.max(0, at)) .. id
end

local function holder_of(id, ukey)
  if rcall('EXISTS', prefix .. id) == 1 then
    return id
  end
  if ukey ~= '' then
    local held = rcall('HGET', unique, ukey)
    -- An entry whose job is gone (deleted behind our back) holds nothing.
    if held and rcall('EXISTS', prefix .. held) == 1 then
      return held
    end
  end
  return false
end

-- The stamps of `now` and of each due time, and the pending ZADD's arguments, are made once
-- per batch (and per distinct delay), not per job: a batch of 1,000 pays one ZADD.
local now_stamp = stamp(now)
local due_stamps = {}
local ids, stored, due, listed = {}, 0, {}, {}
for _, run in ipairs(cjson.decode(ARGV[2])) do
  local delay, rank, ukey, fields, items = run[1], run[2], run[3], run[4], run[5]
  local when = due_stamps[delay]
  if not when then
    local wait = tonumber(delay)
    local at_stamp = wait == 0 and now_stamp or stamp(now + wait)
    local at = tonumber(at_stamp)
    when = {at_stamp, at, member('', at, '')}
    due_stamps[delay] = when
  end
  local at_stamp, at, head = when[1], when[2], rank .. when[3]
  for k = 1, #items, 2 do
    local id, payload = items[k], items[k + 1]
    local holder = holder_of(id, ukey)
    if holder then
      ids[#ids + 1] = holder
    else
      rcall('HSET', prefix .. id, 'id', id, 'payload', payload, 'created_at', now_stamp,
        'available_at', at_stamp, unpack(fields))
      if ukey ~= '' then
        rcall('HSET', unique, ukey, id)
      end
      if at <= now then
        due[#due + 1] = 0
        due[#due + 1] = head .. id  -- member(rank, at, id)
      else
        rcall('ZADD', delayed, at, id)
      end
      ids[#ids + 1] = id
      listed[#listed + 1] = 0
      listed[#listed + 1] = id
      stored = stored + 1
    end
  end
end
if #due > 0 then
  rcall('ZADD', pending, unpack(due))
end
if #listed > 0 then
  rcall('ZADD', index, unpack(listed))
end

-- One token per stored job, up to WAKE_MAX: enough to wake that many idle workers. A delayed
-- job wakes them too, so that each recomputes how long it may sleep.
if stored > 0 then
  local tokens = {}
  for t = 1, math.min(stored, WAKE_MAX) do
    tokens[t] = '1'
  end
  -- LPUSH answers the list's length: only a list past WAKE_MAX needs trimming.
  if rcall('LPUSH', wake, unpack(tokens)) > WAKE_MAX then
    rcall('LTRIM', wake, 0, WAKE_MAX - 1)
  end
end
return ids

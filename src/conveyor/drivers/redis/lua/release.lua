--[[
  release: put jobs held under their tokens back to pending, due after their delay; atomic.

  KEYS[1] pending    ZSET, every score 0, member = rank .. time .. id
  KEYS[2] delayed    ZSET of job ids by available_at
  KEYS[3] reserved   ZSET of job ids by lease end
  KEYS[4] wake       LIST of wake-up tokens
  KEYS[5] pending_ids ZSET, every score 0, member = id: the jobs in pending or delayed, for list_jobs

  ARGV[1] job key prefix
  ARGV[2..] per job: id, token, delay in seconds (from the server's TIME), count_attempt
          ('1' or '0'), error (JSON, or '' to keep the job's last error; an error also joins
          the job's history, field errors)

  Returns the ids released. The job keeps its unique key: it is still unfinished. A damaged
  field (a rank or an attempt that is not what it should be) never makes the script fail half
  way: the job is still released, its attempt left as it is.
]]
local WAKE_MAX = 64
local rcall = redis.call
local pending, delayed, reserved, wake, index = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local prefix = ARGV[1]
local clock = rcall('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000

-- include: pending_member.lua

-- include: errors.lua

local released = {}
for i = 2, #ARGV, 5 do
  local id, token, delay, count, err = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]
  local key = prefix .. id
  local job = rcall('HMGET', key, 'state', 'reservation', 'rank', 'attempt')
  if job[1] == 'reserved' and job[2] == token then
    local text = string.format('%.6f', now + tonumber(delay))
    local at = tonumber(text)
    rcall('HSET', key, 'state', 'pending', 'available_at', text)
    rcall('HDEL', key, 'lease_expires_at')
    local attempt = tonumber(job[4])
    if count == '0' and attempt then
      rcall('HSET', key, 'attempt', attempt - 1)
    end
    if err ~= '' then
      rcall('HSET', key, 'error', err)
      add_error(key, err, job[4], now)
    end
    rcall('ZREM', reserved, id)
    rcall('ZADD', index, 0, id)
    if at <= now then
      rcall('ZADD', pending, 0, member(job[3], at, id))
    else
      rcall('ZADD', delayed, at, id)
    end
    released[#released + 1] = id
  end
end

-- One token per job released, up to WAKE_MAX (see push.lua).
if #released > 0 then
  local tokens = {}
  for t = 1, math.min(#released, WAKE_MAX) do
    tokens[t] = '1'
  end
  rcall('LPUSH', wake, unpack(tokens))
  rcall('LTRIM', wake, 0, WAKE_MAX - 1)
end
return released

--[[
  release: put jobs held under their tokens back to pending at their new time; atomic.

  KEYS[1] pending    ZSET, every score 0, member = rank .. time .. id
  KEYS[2] delayed    ZSET of job ids by available_at
  KEYS[3] reserved   ZSET of job ids by lease end
  KEYS[4] wake       LIST of wake-up tokens

  ARGV[1] job key prefix
  ARGV[2] now
  ARGV[3..] per job: id, token, available_at, count_attempt ('1' or '0'), error (JSON, or
          '' to keep the job's last error)

  Returns the ids released. The job keeps its unique key: it is still unfinished.
]]
local WAKE_MAX = 64
local rcall = redis.call
local pending, delayed, reserved, wake = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local prefix, now = ARGV[1], tonumber(ARGV[2])

local function member(rank, at, id)
  return rank .. string.format('%020.6f', math.max(0, tonumber(at))) .. id
end

local released = {}
for i = 3, #ARGV, 5 do
  local id, token, at, count, err = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]
  local key = prefix .. id
  local job = rcall('HMGET', key, 'state', 'reservation', 'rank')
  if job[1] == 'reserved' and job[2] == token then
    rcall('HSET', key, 'state', 'pending', 'available_at', at)
    if count == '0' then
      rcall('HINCRBY', key, 'attempt', -1)
    end
    if err ~= '' then
      rcall('HSET', key, 'error', err)
    end
    rcall('ZREM', reserved, id)
    if tonumber(at) <= now then
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

--[[
  ack: mark jobs held under their tokens succeeded and free their unique keys; atomic.

  KEYS[1] reserved   ZSET of job ids by lease end
  KEYS[2] succeeded  ZSET of job ids by finished_at
  KEYS[3] unique     HASH unique key -> id of the unfinished job holding it

  ARGV[1] job key prefix
  ARGV[2..] triples of job id, reservation token, result (JSON text, or '' for none)

  Returns the ids acked. A job whose lease ran out is still acked while nobody took it over:
  its token is still the current one.
]]
local rcall = redis.call
local reserved, succeeded, unique = KEYS[1], KEYS[2], KEYS[3]
local prefix = ARGV[1]
local clock = rcall('TIME')
local now = string.format('%.6f', tonumber(clock[1]) + tonumber(clock[2]) / 1000000)

-- Large variadic calls go in slices: unpack() is limited by the Lua C stack.
local function call_in_slices(command, key, items)
  for i = 1, #items, 1000 do
    rcall(command, key, unpack(items, i, math.min(i + 999, #items)))
  end
end

local done = {}
for i = 2, #ARGV, 3 do
  local id, token, result = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local key = prefix .. id
  local job = rcall('HMGET', key, 'state', 'reservation', 'ukey')
  if job[1] == 'reserved' and job[2] == token then
    rcall('HSET', key, 'state', 'succeeded', 'finished_at', now)
    if result ~= '' then
      rcall('HSET', key, 'result', result)
    end
    if job[3] and rcall('HGET', unique, job[3]) == id then
      rcall('HDEL', unique, job[3])
    end
    done[#done + 1] = id
  end
end

local finished = {}
for _, id in ipairs(done) do
  finished[#finished + 1] = now
  finished[#finished + 1] = id
end
call_in_slices('ZREM', reserved, done)
call_in_slices('ZADD', succeeded, finished)
return done

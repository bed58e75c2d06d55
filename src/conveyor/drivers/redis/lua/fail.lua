--[[
  fail: move jobs held under their tokens to failed storage with their error, and free their
  unique keys; atomic.

  KEYS[1] reserved   ZSET of job ids by lease end
  KEYS[2] failed     ZSET of job ids by finished_at
  KEYS[3] unique     HASH unique key -> id of the unfinished job holding it
  KEYS[4] cancelled  ZSET of job ids by finished_at
  KEYS[5] failed_ids ZSET, every score 0, member = id: the failed jobs, for list_jobs

  ARGV[1] job key prefix
  ARGV[2..] per job: id, reservation token, error (JSON), cancelled ('1': to cancelled, not
          failed)

  Returns the ids failed; the job keeps its error (and its history, field errors) until
  purged or pruned.
]]
local rcall = redis.call
local reserved, failed, unique, cancelled, index = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local prefix = ARGV[1]
local clock = rcall('TIME')
local now = string.format('%.6f', tonumber(clock[1]) + tonumber(clock[2]) / 1000000)

-- Large variadic calls go in slices: unpack() is limited by the Lua C stack.
local function call_in_slices(command, key, items)
  for i = 1, #items, 1000 do
    rcall(command, key, unpack(items, i, math.min(i + 999, #items)))
  end
end

-- include: errors.lua

local done, into_failed, into_cancelled, listed = {}, {}, {}, {}
for i = 2, #ARGV, 4 do
  local id, token, err, stop = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3] == '1'
  local key = prefix .. id
  local job = rcall('HMGET', key, 'state', 'reservation', 'ukey', 'attempt')
  if job[1] == 'reserved' and job[2] == token then
    local state, into = 'failed', into_failed
    if stop then
      state, into = 'cancelled', into_cancelled
    else
      listed[#listed + 1] = 0
      listed[#listed + 1] = id
    end
    rcall('HSET', key, 'state', state, 'finished_at', now, 'error', err)
    add_error(key, err, job[4], now)
    if job[3] and rcall('HGET', unique, job[3]) == id then
      rcall('HDEL', unique, job[3])
    end
    done[#done + 1] = id
    into[#into + 1] = now
    into[#into + 1] = id
  end
end

call_in_slices('ZREM', reserved, done)
call_in_slices('ZADD', failed, into_failed)
call_in_slices('ZADD', index, listed)
call_in_slices('ZADD', cancelled, into_cancelled)
return done

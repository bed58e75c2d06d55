--[[
  retry: move failed jobs back to pending, due now, with attempt and rescued 0; atomic.

  KEYS[1] pending    ZSET, every score 0, member = rank .. time .. id
  KEYS[2] failed     ZSET of job ids by finished_at
  KEYS[3] unique     HASH unique key -> id of the unfinished job holding it
  KEYS[4] wake       LIST of wake-up tokens
  KEYS[5] pending_ids ZSET, every score 0, member = id: the jobs in pending or delayed, for list_jobs
  KEYS[6] failed_ids ZSET, every score 0, member = id: the failed jobs, for list_jobs

  ARGV[1] job key prefix
  ARGV[2..] ids of jobs to move; ids not failed in this queue are ignored

  Returns how many moved. A job whose unique key an unfinished job now holds stays failed;
  a job moved takes its key again. "Now" is the server's TIME.
]]
local WAKE_MAX = 64
local rcall = redis.call
local pending, failed, unique, wake, index = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local failed_index = KEYS[6]
local prefix = ARGV[1]
local clock = rcall('TIME')
local now = tonumber(string.format('%.6f', tonumber(clock[1]) + tonumber(clock[2]) / 1000000))

-- include: pending_member.lua

local function key_taken(ukey)
  if not ukey then
    return false
  end
  local held = rcall('HGET', unique, ukey)
  return held and rcall('EXISTS', prefix .. held) == 1
end

local moved = 0
for i = 2, #ARGV do
  local id = ARGV[i]
  local key = prefix .. id
  if rcall('ZSCORE', failed, id) and rcall('EXISTS', key) == 1 then
    local job = rcall('HMGET', key, 'rank', 'ukey')
    if not key_taken(job[2]) then
      rcall('HSET', key, 'state', 'pending', 'attempt', 0, 'rescued', 0, 'available_at',
        string.format('%.6f', now))
      rcall('HDEL', key, 'finished_at', 'lease_expires_at', 'cancel')
      rcall('ZREM', failed, id)
      rcall('ZADD', pending, 0, member(job[1], now, id))
      rcall('ZADD', index, 0, id)
      rcall('ZREM', failed_index, id)
      if job[2] then
        rcall('HSET', unique, job[2], id)
      end
      moved = moved + 1
    end
  end
end

if moved > 0 then
  local tokens = {}
  for t = 1, math.min(moved, WAKE_MAX) do
    tokens[t] = '1'
  end
  rcall('LPUSH', wake, unpack(tokens))
  rcall('LTRIM', wake, 0, WAKE_MAX - 1)
end
return moved

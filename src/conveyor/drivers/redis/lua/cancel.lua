--[[
  cancel: cancel jobs of one queue by id; atomic.

  KEYS[1] pending    ZSET, every score 0, member = rank .. time .. id
  KEYS[2] delayed    ZSET of job ids by available_at
  KEYS[3] cancelled  ZSET of job ids by finished_at
  KEYS[4] unique     HASH unique key -> id of the unfinished job holding it
  KEYS[5] pending_ids ZSET, every score 0, member = id: the jobs in pending or delayed, for list_jobs

  ARGV[1] job key prefix
  ARGV[2..] ids of jobs to cancel

  A pending (or delayed) job becomes cancelled now: out of pending and delayed, its unique key
  free. A reserved job is marked `cancel` = '1' for the worker holding it to stop it. Returns
  the ids of the unfinished jobs found. Finished times are the server's TIME.
]]
local rcall = redis.call
local pending, delayed, cancelled, unique, index = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local prefix = ARGV[1]
local clock = rcall('TIME')
local now = string.format('%.6f', tonumber(clock[1]) + tonumber(clock[2]) / 1000000)

-- include: pending_member.lua

local found = {}
for i = 2, #ARGV do
  local id = ARGV[i]
  local key = prefix .. id
  local job = rcall('HMGET', key, 'state', 'available_at', 'rank', 'ukey')
  if job[1] == 'reserved' then
    rcall('HSET', key, 'cancel', '1')
    found[#found + 1] = id
  elseif job[1] == 'pending' then
    rcall('ZREM', pending, pending_member(job[3], job[2], id))
    rcall('ZREM', delayed, id)
    rcall('ZREM', index, id)
    rcall('HSET', key, 'state', 'cancelled', 'finished_at', now, 'cancel', '1')
    rcall('ZADD', cancelled, now, id)
    if job[4] and rcall('HGET', unique, job[4]) == id then
      rcall('HDEL', unique, job[4])
    end
    found[#found + 1] = id
  end
end
return found

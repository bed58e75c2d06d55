--[[
  purge: delete jobs of one queue that are in the state named; atomic.

  KEYS[1] pending    ZSET, every score 0, member = rank .. time .. id
  KEYS[2] delayed    ZSET of job ids by available_at
  KEYS[3] succeeded  ZSET of job ids by finished_at
  KEYS[4] failed     ZSET of job ids by finished_at
  KEYS[5] unique     HASH unique key -> id of the unfinished job holding it

  ARGV[1] job key prefix
  ARGV[2] now
  ARGV[3] state: pending, delayed, succeeded or failed (the state a reader sees: a pending
          job whose time has not come is delayed). Reserved jobs are never purged.
  ARGV[4..] ids of jobs to delete; a job in another state is left alone

  Returns how many were deleted. A deleted job frees its unique key.
]]
local rcall = redis.call
local pending, delayed, succeeded, failed, unique = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local prefix, now, wanted = ARGV[1], tonumber(ARGV[2]), ARGV[3]

local function member(rank, at, id)
  return rank .. string.format('%020.6f', math.max(0, tonumber(at))) .. id
end

local function visible(state, at)
  if state == 'pending' and tonumber(at) > now then
    return 'delayed'
  end
  return state
end

local deleted = 0
for i = 4, #ARGV do
  local id = ARGV[i]
  local key = prefix .. id
  local job = rcall('HMGET', key, 'state', 'available_at', 'rank', 'ukey')
  if job[1] and wanted ~= 'reserved' and visible(job[1], job[2]) == wanted then
    if job[1] == 'pending' then
      -- A due job may still sit in delayed until a reserve moves it: remove it from both.
      rcall('ZREM', pending, member(job[3], job[2], id))
      rcall('ZREM', delayed, id)
    elseif job[1] == 'succeeded' then
      rcall('ZREM', succeeded, id)
    elseif job[1] == 'failed' then
      rcall('ZREM', failed, id)
    end
    if job[4] and rcall('HGET', unique, job[4]) == id then
      rcall('HDEL', unique, job[4])
    end
    rcall('DEL', key)
    deleted = deleted + 1
  end
end
return deleted

--[[
  purge: delete jobs of one queue that are in the state named; atomic.

  KEYS[1] pending    ZSET, every score 0, member = rank .. time .. id
  KEYS[2] delayed    ZSET of job ids by available_at
  KEYS[3] succeeded  ZSET of job ids by finished_at
  KEYS[4] failed     ZSET of job ids by finished_at
  KEYS[5] unique     HASH unique key -> id of the unfinished job holding it
  KEYS[6] cancelled  ZSET of job ids by finished_at
  KEYS[7] pending_ids ZSET, every score 0, member = id: the jobs in pending or delayed, for list_jobs
  KEYS[8] failed_ids ZSET, every score 0, member = id: the failed jobs, for list_jobs

  ARGV[1] job key prefix
  ARGV[2] state: pending, delayed, succeeded, failed or cancelled (the state a reader sees at the
          server's TIME: a pending job whose time has not come is delayed). Reserved jobs are
          never purged.
  ARGV[3..] ids of jobs to delete; a job in another state is left alone

  Returns how many were deleted. A deleted job frees its unique key. A job whose time field
  is damaged reads as pending, never making the script fail half-way; its member in the
  pending set is then looked for among those of its rank. A job whose state field is damaged
  (or whose hash is gone) is in the state of the set holding its id, as counts and list_jobs
  show it: purging that state deletes it, and its id from the sets.
]]
local STATES = {pending = true, reserved = true, succeeded = true, failed = true, cancelled = true}
local rcall = redis.call
local pending, delayed, succeeded, failed, unique = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local cancelled, index, failed_index = KEYS[6], KEYS[7], KEYS[8]
local prefix, wanted = ARGV[1], ARGV[2]
local clock = rcall('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000

-- include: pending_member.lua

-- The state of a job whose state field cannot be read: that of the set holding its id
-- (never reserved: reserved jobs are never purged).
local function held_in(id)
  for _, set in ipairs({{failed, 'failed'}, {succeeded, 'succeeded'}, {cancelled, 'cancelled'}}) do
    if rcall('ZSCORE', set[1], id) then
      return set[2]
    end
  end
  if rcall('ZSCORE', index, id) or rcall('ZSCORE', delayed, id) then
    return 'pending'
  end
  return nil
end

local function visible(state, at)
  if state == 'pending' and at > now then
    return 'delayed'
  end
  return state
end

local deleted = 0
for i = 3, #ARGV do
  local id = ARGV[i]
  local key = prefix .. id
  local job = rcall('HMGET', key, 'state', 'available_at', 'rank', 'ukey')
  local state, at = job[1], tonumber(job[2])
  if not STATES[state] then
    state = held_in(id)
  end
  if state and wanted ~= 'reserved' and visible(state, at or 0) == wanted then
    if state == 'pending' then
      -- A due job may still sit in delayed until a reserve moves it: remove it from both.
      rcall('ZREM', pending, pending_member(job[3], job[2], id))
      rcall('ZREM', delayed, id)
      rcall('ZREM', index, id)
    elseif state == 'succeeded' then
      rcall('ZREM', succeeded, id)
    elseif state == 'failed' then
      rcall('ZREM', failed, id)
      rcall('ZREM', failed_index, id)
    elseif state == 'cancelled' then
      rcall('ZREM', cancelled, id)
    end
    if job[4] and rcall('HGET', unique, job[4]) == id then
      rcall('HDEL', unique, job[4])
    end
    rcall('DEL', key)
    deleted = deleted + 1
  end
end
return deleted

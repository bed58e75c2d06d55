--[[
  push_one: store one new job without a unique key or meta; atomic. What push.lua does for a
  batch of one such job, with the job's fields as plain arguments rather than JSON: a single
  push, the way a web request pushes, decodes nothing and loops over nothing.

  KEYS[1] pending    ZSET, every score 0, member = rank .. time .. id (see driver.py)
  KEYS[2] delayed    ZSET of job ids by available_at
  KEYS[3] wake       LIST of wake-up tokens that idle workers BLPOP
  KEYS[4] pending_ids ZSET, every score 0, member = id: the jobs in pending or delayed, for list_jobs

  ARGV[1] job key prefix (the job's hash is prefix .. id)
  ARGV[2] id
  ARGV[3] payload
  ARGV[4] delay, in seconds
  ARGV[5] rank
  ARGV[6..] the hash's other fields, [field, value, ...], as push.lua's run has them

  Returns {id}; a job with this id stored already (a push retried after a lost reply) stores
  nothing twice.
]]
local WAKE_MAX = 64
local rcall = redis.call
local pending, delayed, wake, index = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local id = ARGV[2]
local key = ARGV[1] .. id
if rcall('EXISTS', key) == 1 then
  return {id}
end
local clock = rcall('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local now_stamp = string.format('%.6f', now)
local wait = tonumber(ARGV[4])
local at_stamp = wait == 0 and now_stamp or string.format('%.6f', now + wait)
local at = tonumber(at_stamp)
rcall('HSET', key, 'id', id, 'payload', ARGV[3], 'created_at', now_stamp,
  'available_at', at_stamp, unpack(ARGV, 6))
if at <= now then
  rcall('ZADD', pending, 0, ARGV[5] .. string.format('%020.6f', math.max(0, at)) .. id)
else
  rcall('ZADD', delayed, at, id)
end
rcall('ZADD', index, 0, id)
if rcall('LPUSH', wake, '1') > WAKE_MAX then
  rcall('LTRIM', wake, 0, WAKE_MAX - 1)
end
return {id}

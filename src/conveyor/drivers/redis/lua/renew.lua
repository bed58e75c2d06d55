--[[
  renew: extend the leases of jobs still held under their tokens; atomic.

  KEYS[1] reserved   ZSET of job ids by lease end

  ARGV[1] job key prefix
  ARGV[2] lease, in seconds: each lease now ends that long after the server's TIME
  ARGV[3] '1' to mark the jobs as running alone too (never unmarked here), else '0'
  ARGV[4..] pairs of job id, reservation token

  Returns the ids renewed; a job not reserved under that token (fencing) is left alone.
]]
local rcall = redis.call
local reserved, prefix = KEYS[1], ARGV[1]
local clock = rcall('TIME')
local lease_end = string.format('%.6f', tonumber(clock[1]) + tonumber(clock[2]) / 1000000
  + tonumber(ARGV[2]))

local renewed = {}
local alone = ARGV[3] == '1'
for i = 4, #ARGV, 2 do
  local id, token = ARGV[i], ARGV[i + 1]
  local key = prefix .. id
  local job = rcall('HMGET', key, 'state', 'reservation')
  if job[1] == 'reserved' and job[2] == token then
    rcall('HSET', key, 'lease_expires_at', lease_end)
    if alone then
      rcall('HSET', key, 'alone', '1')
    end
    rcall('ZADD', reserved, lease_end, id)
    renewed[#renewed + 1] = id
  end
end
return renewed

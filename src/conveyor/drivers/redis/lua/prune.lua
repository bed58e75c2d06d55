--[[
  prune: delete finished jobs (succeeded, failed, cancelled) that finished before a cutoff;
  atomic.

  KEYS[1] succeeded  ZSET of job ids by finished_at
  KEYS[2] failed     ZSET of job ids by finished_at
  KEYS[3] cancelled  ZSET of job ids by finished_at
  KEYS[4] failed_ids ZSET, every score 0, member = id: the failed jobs, for list_jobs

  ARGV[1] job key prefix
  ARGV[2] age, in seconds: jobs that finished more than this long before the server's TIME
          are deleted
  ARGV[3] at most this many per call, so one call never stalls the server

  Returns how many were deleted; the caller calls again while that equals ARGV[3]. Finished
  jobs hold no unique key, so none is freed here.
]]
local rcall = redis.call
local prefix, budget = ARGV[1], tonumber(ARGV[3])
local clock = rcall('TIME')
local cutoff = '(' .. string.format('%.6f',
  tonumber(clock[1]) + tonumber(clock[2]) / 1000000 - tonumber(ARGV[2]))

local deleted = 0
for _, finished in ipairs({KEYS[1], KEYS[2], KEYS[3]}) do
  if budget - deleted > 0 then
    local ids = rcall('ZRANGEBYSCORE', finished, '-inf', cutoff, 'LIMIT', 0, budget - deleted)
    for _, id in ipairs(ids) do
      rcall('DEL', prefix .. id)
    end
    for i = 1, #ids, 1000 do
      rcall('ZREM', finished, unpack(ids, i, math.min(i + 999, #ids)))
      if finished == KEYS[2] then
        rcall('ZREM', KEYS[4], unpack(ids, i, math.min(i + 999, #ids)))
      end
    end
    deleted = deleted + #ids
  end
end
return deleted

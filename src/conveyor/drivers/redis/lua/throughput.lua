--[[
  throughput: a queue's jobs succeeded and failed per minute over the last minutes; read-only.

  KEYS[1] succeeded  ZSET of job ids by finished_at
  KEYS[2] failed     ZSET of job ids by finished_at

  ARGV[1] minutes: how many whole minutes, ending with the current one ("now" is the server's
          TIME)

  Returns {start, succeeded per minute..., failed per minute...}: start, as text, is where the
  first minute starts (Throughput.start_at). One ZCOUNT per state and minute, here rather than
  sent by the client: 120 commands packed and parsed by it took 1.7 ms a queue.
]]
local rcall = redis.call
local minutes = tonumber(ARGV[1])
local clock = rcall('TIME')
local start = (math.floor(tonumber(clock[1]) / 60) - minutes + 1) * 60

local counted = {string.format('%d', start)}
for k = 1, 2 do
  for minute = 0, minutes - 1 do
    local low = start + 60 * minute
    counted[#counted + 1] = rcall('ZCOUNT', KEYS[k], string.format('%d', low), '(' .. string.format('%d', low + 60))
  end
end
return counted

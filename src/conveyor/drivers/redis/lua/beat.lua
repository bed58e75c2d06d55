--[[
  beat: note that a worker process is alive now, or forget it; atomic.

  KEYS[1] beats      HASH identity -> "worker started_at seen_at" (times from the server's TIME)

  ARGV[1] the process's identity ("name:host:pid")
  ARGV[2] its registered worker's name
  ARGV[3] '1' to forget it (it stopped cleanly), and any process not heard from for a day

  Returns nothing. A worker's name holds no space (names are validated), so the fields split.
]]
local DAY = 86400
local rcall = redis.call
local beats, identity, worker, stopping = KEYS[1], ARGV[1], ARGV[2], ARGV[3] == '1'
local clock = rcall('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000

if stopping then
  rcall('HDEL', beats, identity)
  local stale = {}
  local all = rcall('HGETALL', beats)
  for i = 1, #all, 2 do
    local seen = tonumber(string.match(all[i + 1], '(%S+)$'))
    if not seen or seen < now - DAY then
      stale[#stale + 1] = all[i]
    end
  end
  for i = 1, #stale, 1000 do
    rcall('HDEL', beats, unpack(stale, i, math.min(i + 999, #stale)))
  end
  return 0
end

local started = string.format('%.6f', now)
local before = rcall('HGET', beats, identity)
if before then
  started = string.match(before, '^%S+ (%S+) ') or started
end
rcall('HSET', beats, identity, worker .. ' ' .. started .. ' ' .. string.format('%.6f', now))
return 0

--[[
  mark_tick: record the latest tick a schedule pushed; atomic.

  KEYS[1] ticks  HASH schedule name -> "<tick> <job id>"

  ARGV[1] schedule name
  ARGV[2] tick, seconds since the epoch
  ARGV[3] the tick's job id

  The field is written only when no tick is recorded or the recorded one is older (a damaged
  value counts as none), so the latest tick wins whatever order schedulers arrive in.
]]
local known = redis.call('HGET', KEYS[1], ARGV[1])
local at = known and tonumber(string.match(known, '^(%S+) ')) or nil
if at == nil or at < tonumber(ARGV[2]) then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2] .. ' ' .. ARGV[3])
end
return 0

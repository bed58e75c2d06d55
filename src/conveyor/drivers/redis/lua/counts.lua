--[[
  counts: how many jobs of one queue are in each state; read-only, one consistent view.

  KEYS[1] pending    ZSET, every score 0, member = rank .. time .. id
  KEYS[2] delayed    ZSET of job ids by available_at
  KEYS[3] reserved   ZSET of job ids by lease end
  KEYS[4] succeeded  ZSET of job ids by finished_at
  KEYS[5] failed     ZSET of job ids by finished_at

  No ARGV: "now" is the server's TIME.

  Returns {pending, delayed, reserved, succeeded, failed}. A delayed job whose time has come
  counts as pending even before a reserve moves it; a job whose lease ran out counts as
  reserved until a reserve hands it out again.
]]
local rcall = redis.call
local clock = rcall('TIME')
local now = string.format('%.6f', tonumber(clock[1]) + tonumber(clock[2]) / 1000000)
return {
  rcall('ZCARD', KEYS[1]) + rcall('ZCOUNT', KEYS[2], '-inf', now),
  rcall('ZCOUNT', KEYS[2], '(' .. now, '+inf'),
  rcall('ZCARD', KEYS[3]),
  rcall('ZCARD', KEYS[4]),
  rcall('ZCARD', KEYS[5]),
}

--[[
  list: the next jobs of a state in id order, for list_jobs; one slice of the walk. The ids
  come from the state's index in order (ZRANGEBYLEX), so a page costs the ids it lists and
  those it passes over (of another state sharing the index, of another name), never the
  whole state; one call looks at no more than ARGV[7] ids, so it never holds the server long.

  KEYS[1] the index, a ZSET with every score 0 and ids for members: pending_ids (the jobs in
          pending or delayed) or failed_ids (the failed jobs)

  ARGV[1] job key prefix (the job's hash is prefix .. id)
  ARGV[2] the state listed: 'pending' (due by ARGV[3]) or 'delayed' (due after it), both
          from pending_ids, or 'failed', from failed_ids
  ARGV[3] now, the server's time as the caller read it
  ARGV[4] start after this id ('' for the first)
  ARGV[5] only jobs of this name: '=' .. name, or '' for any name
  ARGV[6] stop once this many jobs are found
  ARGV[7] look at no more than this many ids

  Returns {last, dropped, id, id, ...}: the jobs found, in id order, after `last`, the last
  id looked at ('' once the walk reached the end). An id whose job is gone or in a state the
  index is not for (deleted or moved by a script of an older version) is dropped from the
  index on the way, and counted in `dropped`: the index may then miss as many jobs, and the
  caller mends it (unindex.lua, reindex.lua). A job whose state is damaged (missing, not a
  state) counts as the index's, and a damaged due time as due: the caller reads the job and
  decides.
]]
local rcall = redis.call
local index, prefix, wanted, now = KEYS[1], ARGV[1], ARGV[2], tonumber(ARGV[3])
local after, name, enough, slice = ARGV[4], ARGV[5], tonumber(ARGV[6]), tonumber(ARGV[7])
local STATES = {pending = true, reserved = true, succeeded = true, failed = true, cancelled = true}
local own = wanted == 'failed' and 'failed' or 'pending'

local start = after == '' and '-' or '(' .. after
local ids = rcall('ZRANGEBYLEX', index, start, '+', 'LIMIT', 0, slice)
local out, stale = {'', 0}, {}
for _, id in ipairs(ids) do
  out[1] = id
  local job = rcall('HMGET', prefix .. id, 'state', 'available_at', 'name')
  local gone = not job[1] and rcall('EXISTS', prefix .. id) == 0
  if gone or (job[1] ~= own and STATES[job[1]]) then
    stale[#stale + 1] = id
  else
    local state = own
    if own == 'pending' then
      local at = tonumber(job[2])
      state = (at and at > now) and 'delayed' or 'pending'
    end
    if state == wanted and (name == '' or (job[3] and '=' .. job[3] == name)) then
      out[#out + 1] = id
      if #out > enough + 1 then
        break
      end
    end
  end
end
if #ids < slice and #out <= enough + 1 then
  out[1] = ''  -- the end: nothing after the last id looked at
end
if #stale > 0 then
  rcall('ZREM', index, unpack(stale))
  out[2] = #stale
end
return out

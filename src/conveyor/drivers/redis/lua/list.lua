--[[
  list: the next pending (or delayed) jobs in id order, for list_jobs; one slice of the walk.
  The ids come from pending_ids in order (ZRANGEBYLEX), so a page costs the ids it lists
  and those it passes over (of the other state, of another name), never the whole state;
  one call looks at no more than ARGV[7] ids, so it never holds the server for long.

  KEYS[1] pending_ids ZSET, every score 0, member = id: the jobs in pending or delayed

  ARGV[1] job key prefix (the job's hash is prefix .. id)
  ARGV[2] 'pending' (due by ARGV[3]) or 'delayed' (due after it)
  ARGV[3] now, the server's time as the caller read it
  ARGV[4] start after this id ('' for the first)
  ARGV[5] only jobs of this name: '=' .. name, or '' for any name
  ARGV[6] stop once this many jobs are found
  ARGV[7] look at no more than this many ids

  Returns {last, id, id, ...}: the jobs found, in id order, after `last`, the last id looked
  at ('' once the walk reached the end). An id whose job is reserved or finished (moved by a
  script of an older version) is dropped from pending_ids on the way; one whose hash is gone
  is passed over (its member may still be in pending: see reindex.lua). A job whose state or
  due time is damaged counts as pending: the caller reads it and decides.
]]
local rcall = redis.call
local index, prefix, wanted, now = KEYS[1], ARGV[1], ARGV[2], tonumber(ARGV[3])
local after, name, enough, slice = ARGV[4], ARGV[5], tonumber(ARGV[6]), tonumber(ARGV[7])
local GONE = {reserved = true, succeeded = true, failed = true, cancelled = true}

local start = after == '' and '-' or '(' .. after
local ids = rcall('ZRANGEBYLEX', index, start, '+', 'LIMIT', 0, slice)
local out, stale = {''}, {}
for _, id in ipairs(ids) do
  out[1] = id
  local job = rcall('HMGET', prefix .. id, 'state', 'available_at', 'name')
  if GONE[job[1]] then
    stale[#stale + 1] = id
  elseif job[1] or rcall('EXISTS', prefix .. id) == 1 then
    local at = tonumber(job[2])
    local state = (at and at > now) and 'delayed' or 'pending'
    if state == wanted and (name == '' or (job[3] and '=' .. job[3] == name)) then
      out[#out + 1] = id
      if #out > enough then
        break
      end
    end
  end
end
if #ids < slice and #out <= enough then
  out[1] = ''  -- the end: nothing after the last id looked at
end
if #stale > 0 then
  rcall('ZREM', index, unpack(stale))
end
return out

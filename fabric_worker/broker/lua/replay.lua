#!lua
-- Replay one dead letter: put its original job back on its lane, atomically.
--
-- KEYS[1] dead-letter stream   KEYS[2] jobs stream
-- KEYS[3] backlog              KEYS[4] job-state key (any key of the lane if the id is unknown)
-- KEYS[5] the job's batch record in this lane (the backlog key for no batch)
-- ARGV[1] dead-letter entry id  ARGV[2] padded cost (0 if unknown)
-- ARGV[3] "1" if KEYS[4] is the job's own key
--
-- The caller computed the cost from the dead letter's header; stream entries
-- are immutable and their ids never reused, so the header read here is that one.
--
-- Returns {"replayed", new entry id}; {"gone"} if the dead letter no longer
-- exists; {"done"} or {"queued", state} if the job was meanwhile completed or
-- submitted again (then nothing changes: a replay would only duplicate work).
-- include: state, fields, batch
local found = redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1])
if #found == 0 then
  return {'gone'}
end
local own_key = ARGV[3] == '1'
if own_key then
  -- 'dead' is the normal case; no state at all means it expired (retention).
  local state = redis.call('GET', KEYS[4])
  if state and is_done(state) then
    return {'done'}
  end
  if state and state ~= 'dead' then
    return {'queued', state}
  end
end
local h, t = job_fields(found[1][2])
local new_id = redis.call('XADD', KEYS[2], '*', 'h', h, 't', t)
if own_key then
  -- Same shape as submit.lua's state, so submit dedupes it and complete and
  -- requeue handle it; no expiry while queued.
  redis.call('SET', KEYS[4], queued_state(new_id, 'replay'))
  -- Dead back to queued: the batch has one job fewer dead, and is not
  -- finished. Dead letters outlive batch records, so the record may be a
  -- later batch of the same name that never counted this job: a record
  -- created after the letter was written (both on this server's clock) counts
  -- the job in as a new one instead. No record at all: nothing is counted.
  if KEYS[5] ~= KEYS[3] and is_record(KEYS[5]) then
    local created_ms = math.floor(tonumber(redis.call('HGET', KEYS[5], 'created') or '0') * 1000)
    if created_ms <= tonumber(string.match(ARGV[1], '^%d+')) then
      redis.call('HINCRBY', KEYS[5], 'dead', -1)
    else
      redis.call('HINCRBY', KEYS[5], 'total', 1)
    end
    batch_reopen(KEYS[5])
  end
end
local cost = tonumber(ARGV[2])
if cost > 0 then
  redis.call('INCRBY', KEYS[3], cost)
end
redis.call('XDEL', KEYS[1], ARGV[1])
return {'replayed', new_id}

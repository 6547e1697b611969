#!lua
-- Cancel a batch's jobs of one lane that are still queued or running.
--
-- KEYS[1] jobs stream   KEYS[2] results stream   KEYS[3] backlog
-- KEYS[4] the batch's record in this lane   KEYS[5] the lane's batch index
-- KEYS[5 + i] job-state key of job i
-- ARGV[1] group  ARGV[2] retention s  ARGV[3] batch name
-- ARGV[4 + 3(i-1)..] job i: entry id, padded cost ('' when the entry's header
-- does not say), result header (finish_reason cancelled; the result's tokens
-- are empty)
--
-- First the record is marked cancelled (created if the lane had none), so
-- that submit.lua refuses new jobs for the batch in this lane from now on.
-- Then each job whose state still says "queued <this entry>" gets its one
-- result, is finished, acked and deleted, its backlog released and counted
-- cancelled. A worker holding the entry loses its lease at its next renew
-- (the entry is no longer pending) and aborts it in the engine, writing
-- nothing. A job finished meanwhile (or another entry of its id) is left
-- alone: completion and cancel settle each job once, whichever comes first.
--
-- A queued job whose cost is not a count (its entry's header is malformed) is
-- left alone too: releasing a guessed cost would skew the backlog, and the
-- worker that reads the entry dead-letters it with its reason, which counts
-- it once.
--
-- Returns one reply per job: "cancelled", "finished" (nothing done) or
-- "malformed" (queued, but its cost unknown: nothing done).
-- include: settle, state, batch
local group, retention, name = ARGV[1], ARGV[2], ARGV[3]
local num_jobs = #KEYS - 5
if not string.match(retention, '^[1-9]%d*$') or #ARGV ~= 3 + 3 * num_jobs then
  return redis.error_reply('cancel: ' .. #ARGV .. ' args for ' .. num_jobs .. ' jobs')
end
local record = KEYS[4]
if redis.call('HSETNX', record, 'cancelled_at', now_s()) == 1 then
  if redis.call('HSETNX', record, 'created', redis.call('HGET', record, 'cancelled_at')) == 1 then
    -- A lane the batch had not reached: kept only to refuse late jobs.
    redis.call('ZADD', KEYS[5], 'NX', tonumber(redis.call('HGET', record, 'created')), name)
    redis.call('HSET', record, 'total', 0)
    finish_if_terminal(record, retention)
  end
end
local replies = {}
for i = 1, num_jobs do
  local a = 4 + 3 * (i - 1)
  local entry_id, cost = ARGV[a], ARGV[a + 1]
  local state = redis.call('GET', KEYS[5 + i])
  if not (state and is_queued_as(state, entry_id)) then
    replies[i] = 'finished'
  elseif not string.match(cost, '^%d+$') then
    replies[i] = 'malformed'
  else
    local added = redis.call('XADD', KEYS[2], '*', 'h', ARGV[a + 2], 't', '')
    redis.call('SET', KEYS[5 + i], 'done ' .. added, 'EX', retention)
    ack_and_delete(KEYS[1], group, entry_id)
    release_backlog(KEYS[3], cost)
    batch_settle(record, 'cancelled', retention)
    replies[i] = 'cancelled'
  end
end
return replies

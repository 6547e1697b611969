#!lua
-- Move one entry to the lane's dead-letter stream, with its reason.
--
-- KEYS[1] jobs stream   KEYS[2] dead-letter stream
-- KEYS[3] backlog       KEYS[4] job-state key (any key of the lane if the id is unknown)
-- KEYS[5] the job's batch record in this lane (the backlog key for no batch)
-- ARGV[1] group  ARGV[2] entry id  ARGV[3] padded cost (0 if unknown)
-- ARGV[4] retention s  ARGV[5] reason  ARGV[6] deliveries  ARGV[7] last error
-- ARGV[8] worker  ARGV[9] now (unix s)  ARGV[10] "1" if KEYS[4] is the job's own key
--
-- Returns "dead" (moved), "done" (finished elsewhere meanwhile: acked and deleted) or
-- "gone" (the entry no longer exists: only acked).
-- include: settle, state, fields, batch
local own_key = ARGV[10] == '1'
local state = false
if own_key then state = redis.call('GET', KEYS[4]) end
if state and is_finished(state) then
  ack_and_delete(KEYS[1], ARGV[1], ARGV[2])
  return 'done'
end
-- The id comes from the entry's own header, which may be forged or stale: only
-- the entry the state names ("queued <this entry> <nonce>") may mark the job
-- dead and release its backlog. Another entry carrying a live job's id is
-- dead-lettered alone.
if state and not is_queued_as(state, ARGV[2]) then
  own_key = false
  state = false
end
local found = redis.call('XRANGE', KEYS[1], ARGV[2], ARGV[2])
if #found == 0 then
  redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
  return 'gone'
end
-- Keep the original h and t byte for byte so the entry can be replayed.
local h, t = job_fields(found[1][2])
redis.call('XADD', KEYS[2], '*', 'h', h, 't', t, 'reason', ARGV[5], 'deliveries', ARGV[6],
  'error', ARGV[7], 'worker', ARGV[8], 'entry', ARGV[2], 'failed_at', ARGV[9])
if own_key then
  redis.call('SET', KEYS[4], 'dead', 'EX', ARGV[4])
end
ack_and_delete(KEYS[1], ARGV[1], ARGV[2])
if state then release_backlog(KEYS[3], ARGV[3]) end
-- Counted only where the job's own state went from queued to dead.
if state and KEYS[5] ~= KEYS[3] then batch_settle(KEYS[5], 'dead', ARGV[4]) end
return 'dead'

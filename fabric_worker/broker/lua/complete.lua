#!lua
-- Complete one job: at most one result per job id, ever.
--
-- KEYS[1] jobs stream   KEYS[2] results stream
-- KEYS[3] backlog       KEYS[4] job-state key
-- ARGV[1] group  ARGV[2] entry id  ARGV[3] padded cost  ARGV[4] retention s
-- ARGV[5] result header  ARGV[6] result tokens
--
-- Returns "ok" when this call wrote the result, "duplicate" when the job was
-- already done or dead (a slow worker finishing work that was reclaimed and
-- finished elsewhere, or a second entry for a finished id): then it writes no
-- result, and acks and deletes this entry so nothing finished lingers.
-- include: settle
local state = redis.call('GET', KEYS[4])
if state == 'done' or state == 'dead' then
  ack_and_delete(KEYS[1], ARGV[1], ARGV[2])
  return 'duplicate'
end
redis.call('XADD', KEYS[2], '*', 'h', ARGV[5], 't', ARGV[6])
redis.call('SET', KEYS[4], 'done', 'EX', ARGV[4])
ack_and_delete(KEYS[1], ARGV[1], ARGV[2])
-- Only jobs that came through the submit script were counted in the backlog;
-- an entry written by hand (no state key) was not.
if state then release_backlog(KEYS[3], ARGV[3]) end
return 'ok'

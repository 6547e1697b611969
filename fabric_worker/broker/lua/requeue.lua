#!lua flags=allow-oom
-- Hand back an entry this consumer holds but has not started, so that another
-- worker takes it at once: no lease to wait out, no delivery counted.
--
-- KEYS[1] jobs stream   KEYS[2] job-state key (any key of the lane if unknown)
-- ARGV[1] group  ARGV[2] this consumer  ARGV[3] entry id  ARGV[4] "1" if KEYS[2] is the job's
--
-- The entry is copied to the stream's tail (where blocked readers see it
-- immediately), the state key is pointed at the copy, and the original is
-- acked and deleted. Returns the new entry id, or false if the entry is not
-- ours any more (then nothing changes).
-- include: owner, settle, state
if not is_owner(KEYS[1], ARGV[1], ARGV[3], ARGV[2]) then
  return false
end
local found = redis.call('XRANGE', KEYS[1], ARGV[3], ARGV[3])
if #found == 0 then
  redis.call('XACK', KEYS[1], ARGV[1], ARGV[3])
  return false
end
local new_id = redis.call('XADD', KEYS[1], '*', unpack(found[1][2]))
if ARGV[4] == '1' then
  local state = redis.call('GET', KEYS[2])
  if state and string.sub(state, 1, 7) == 'queued ' then
    redis.call('SET', KEYS[2], queued_state(new_id, nonce_of(state)))
  end
end
ack_and_delete(KEYS[1], ARGV[1], ARGV[3])
return new_id

#!lua flags=allow-oom
-- Give up this consumer's hold on an entry whose attempt failed, so that the
-- next reclaim (by any worker) retries it and counts the delivery.
--
-- KEYS[1] jobs stream
-- ARGV[1] group  ARGV[2] this consumer  ARGV[3] entry id  ARGV[4] idle ms to set
--
-- XCLAIM ... IDLE sets the entry's idle time past the lease, which makes it
-- reclaimable at once; JUSTID keeps this from counting as a delivery itself.
-- include: owner
if not is_owner(KEYS[1], ARGV[1], ARGV[3], ARGV[2]) then
  return 0
end
redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[3], 'IDLE', ARGV[4], 'JUSTID')
return 1

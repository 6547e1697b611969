#!lua flags=allow-oom
-- Renew this consumer's lease on its entries (a heartbeat that is not a delivery).
--
-- KEYS[1] jobs stream
-- ARGV[1] group  ARGV[2] this consumer  ARGV[3..] entry ids
--
-- For each id still pending with this consumer, XCLAIM with min-idle 0 and
-- JUSTID resets its idle time without counting a delivery. The owner check
-- comes first, in the same script: XCLAIM alone would steal an entry that
-- another worker reclaimed. Returns the ids whose lease was lost (owned by
-- someone else now, or no longer pending at all).
-- include: owner
local lost = {}
for i = 3, #ARGV do
  local id = ARGV[i]
  if is_owner(KEYS[1], ARGV[1], id, ARGV[2]) then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, id, 'JUSTID')
  else
    lost[#lost + 1] = id
  end
end
return lost

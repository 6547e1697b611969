-- Whether an entry is pending with this very consumer: the check that keeps a
-- worker from acting on an entry another worker has reclaimed meanwhile.
local function is_owner(stream, group, entry_id, consumer)
  local p = redis.call('XPENDING', stream, group, entry_id, entry_id, 1)
  return #p == 1 and p[1][2] == consumer
end

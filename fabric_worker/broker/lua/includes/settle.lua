-- Taking an entry off its lane: ack and delete it, release its backlog.

-- Ack, then delete: trimming would drop pending work, XDEL only this entry.
local function ack_and_delete(stream, group, entry_id)
  redis.call('XACK', stream, group, entry_id)
  redis.call('XDEL', stream, entry_id)
end

-- The counter never goes below zero: a hand-written entry (no state key) was
-- never counted, and a replay may race a completion.
local function release_backlog(backlog, cost)
  local left = redis.call('DECRBY', backlog, cost)
  if left < 0 then redis.call('SET', backlog, 0) end
end

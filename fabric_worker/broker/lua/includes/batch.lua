-- A batch's record in this lane: a hash of total, done, dead, cancelled,
-- created, finished (and cancelled_at once cancelled). Only a script that
-- actually changes a job's state moves a count, so the counts stay exact.
-- A job of no batch is given the lane's backlog key in the record's place:
-- callers check `record ~= <backlog key>` first.

-- The server's clock, as unix seconds with microseconds.
local function now_s()
  local t = redis.call('TIME')
  return t[1] .. '.' .. string.format('%06d', tonumber(t[2]))
end

-- Whether the record exists as a hash: a batch that expired (or was deleted)
-- is not brought back with half its counts.
local function is_record(record)
  return redis.call('TYPE', record).ok == 'hash'
end

-- Once every job of the lane's part is terminal, stamp the finish time and
-- let the record expire with its results' retention.
local function finish_if_terminal(record, retention)
  local c = redis.call('HMGET', record, 'total', 'done', 'dead', 'cancelled')
  for i = 1, 4 do c[i] = tonumber(c[i] or '0') or 0 end
  if c[2] + c[3] + c[4] >= c[1] then
    redis.call('HSET', record, 'finished', now_s())
    redis.call('EXPIRE', record, retention)
  end
end

-- Jobs (num, 1 if nil) of this lane moved from queued to done, dead or cancelled.
local function batch_settle(record, field, retention, num)
  if not is_record(record) then return end
  redis.call('HINCRBY', record, field, num or 1)
  finish_if_terminal(record, retention)
end

-- A record with a job queued again: not finished, and kept until it is.
local function batch_reopen(record)
  redis.call('HDEL', record, 'finished')
  redis.call('PERSIST', record)
end

-- The record of a batch taking jobs: created (and indexed) on first use,
-- unfinished again and kept until its jobs are terminal.
local function batch_open(record, index, name)
  if redis.call('HSETNX', record, 'created', now_s()) == 1 then
    redis.call('ZADD', index, 'NX', tonumber(redis.call('HGET', record, 'created')), name)
  end
  batch_reopen(record)
end

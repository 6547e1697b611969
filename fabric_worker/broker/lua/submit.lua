#!lua
-- Enqueue a batch of jobs of one lane, atomically per job.
--
-- KEYS[1]  the lane's jobs stream
-- KEYS[2]  the lane's backlog counter (padded tokens queued or in flight)
-- KEYS[3]  the batch's record in this lane, KEYS[4] the lane's batch index
--          (both the backlog key when the jobs belong to no batch)
-- KEYS[5..] one job-state key per job, in order
-- ARGV[1]  backlog cap in tokens
-- ARGV[2]  the caller's nonce, stored with the state so a retry of the same
--          call can tell its own earlier write from someone else's
-- ARGV[3]  the batch name ('' for none)
-- ARGV[4 + 3k .. 6 + 3k]  job k: padded cost, header, packed tokens
--
-- Returns one string with a letter per job handled, in order: "n" enqueued
-- now, "o" enqueued by an earlier attempt of this call (its state carries
-- this nonce: a retry after a lost reply), "d" a duplicate of someone else's
-- job. One string, not one per job: building and sending 500 replies cost as
-- much as the XADDs. Handling stops at the first job that would push the
-- backlog over the cap; the caller retries the rest after a backoff. A
-- cancelled batch takes no new jobs: an error naming it, nothing written.
-- A duplicate stays in the batch it first came with and is not counted here.
-- include: state, batch
local cap = tonumber(ARGV[1])
local nonce = ARGV[2]
local batch = ARGV[3]
local record, index = KEYS[3], KEYS[4]
if batch ~= '' and redis.call('HEXISTS', record, 'cancelled_at') == 1 then
  return redis.error_reply('BATCHCANCELLED batch ' .. batch .. ' was cancelled: it takes no new jobs')
end
local backlog = tonumber(redis.call('GET', KEYS[2]) or '0')
local added = 0
local num_new = 0
local out = {}
for i = 5, #KEYS do
  local a = 4 + (i - 5) * 3
  local state = redis.call('GET', KEYS[i])
  if state then
    out[#out + 1] = nonce_of(state) == nonce and 'o' or 'd'
  else
    local cost = tonumber(ARGV[a])
    if backlog + added + cost > cap then
      break
    end
    -- No MAXLEN: trimming a job stream would drop work nobody has done.
    local eid = redis.call('XADD', KEYS[1], '*', 'h', ARGV[a + 1], 't', ARGV[a + 2])
    redis.call('SET', KEYS[i], queued_state(eid, nonce))
    added = added + cost
    num_new = num_new + 1
    out[#out + 1] = 'n'
  end
end
if added > 0 then
  redis.call('INCRBY', KEYS[2], added)
end
if batch ~= '' and num_new > 0 then
  batch_open(record, index, batch)
  redis.call('HINCRBY', record, 'total', num_new)
end
return table.concat(out)

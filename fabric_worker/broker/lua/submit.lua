#!lua
-- Enqueue a batch of jobs of one lane, atomically per job.
--
-- KEYS[1]  the lane's jobs stream
-- KEYS[2]  the lane's backlog counter (padded tokens queued or in flight)
-- KEYS[3..] one job-state key per job, in order
-- ARGV[1]  backlog cap in tokens
-- ARGV[2]  the caller's nonce, stored with the state so a retry of the same
--          call can tell its own earlier write from someone else's
-- ARGV[3 + 3k .. 5 + 3k]  job k: padded cost, header, packed tokens
--
-- Returns one string per job handled, in order: "new <entry-id>" or
-- "dup <stored state>". Handling stops at the first job that would push the
-- backlog over the cap; the caller retries the rest after a backoff.
-- include: state
local cap = tonumber(ARGV[1])
local nonce = ARGV[2]
local backlog = tonumber(redis.call('GET', KEYS[2]) or '0')
local added = 0
local out = {}
for i = 3, #KEYS do
  local a = 3 + (i - 3) * 3
  local state = redis.call('GET', KEYS[i])
  if state then
    out[#out + 1] = 'dup ' .. state
  else
    local cost = tonumber(ARGV[a])
    if backlog + added + cost > cap then
      break
    end
    -- No MAXLEN: trimming a job stream would drop work nobody has done.
    local eid = redis.call('XADD', KEYS[1], '*', 'h', ARGV[a + 1], 't', ARGV[a + 2])
    redis.call('SET', KEYS[i], queued_state(eid, nonce))
    added = added + cost
    out[#out + 1] = 'new ' .. eid
  end
end
if added > 0 then
  redis.call('INCRBY', KEYS[2], added)
end
return out

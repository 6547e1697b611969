#!lua
-- Complete a batch of jobs of one lane: at most one result per job id, ever.
--
-- KEYS[1] jobs stream   KEYS[2] results stream   KEYS[3] backlog
-- KEYS[3 + i] job-state key of job i   KEYS[3 + n + i] job i's batch record in
-- this lane (the backlog key for a job of no batch), for n jobs
-- ARGV[1] group  ARGV[2] retention s
-- ARGV[3 + 4(i-1)..] job i: entry id, padded cost, result header, result tokens
--
-- Returns one reply per job, in order: "ok" when this call wrote the result,
-- "duplicate" when the job was already done or dead (a slow worker finishing
-- work that was reclaimed and finished elsewhere, or a second entry for a
-- finished id): then it writes no result, and acks and deletes this entry so
-- nothing finished lingers. "error <why>" for a job that could not be
-- completed: it wrote nothing of that job.
--
-- A Lua error keeps the writes before it and skips the rest, so one bad job
-- must not end the batch: each job is checked before anything of it is
-- written, and its reads and first write go through redis.pcall.
-- include: settle, state, batch
local group, retention = ARGV[1], ARGV[2]
if not string.match(retention, '^[1-9]%d*$') then
  return redis.error_reply('complete: retention must be a positive integer')
end
local num_jobs = (#KEYS - 3) / 2
if num_jobs ~= math.floor(num_jobs) or #ARGV ~= 2 + 4 * num_jobs then
  return redis.error_reply('complete: ' .. #ARGV .. ' args for ' .. #KEYS .. ' keys')
end

-- Done jobs per batch record, counted once after the loop: a batch's jobs
-- usually share one record, so that is one update per call, not per job.
local num_done = {}

local function complete_one(state_key, record, entry_id, cost, header, tokens)
  if not string.match(entry_id, '^%d+%-%d+$') then return 'error entry id ' .. entry_id end
  if not string.match(cost, '^%d+$') then return 'error cost ' .. cost end
  local state = redis.pcall('GET', state_key)
  if type(state) == 'table' and state.err then return 'error ' .. state.err end
  if state and is_finished(state) then
    ack_and_delete(KEYS[1], group, entry_id)
    return 'duplicate'
  end
  local added = redis.pcall('XADD', KEYS[2], '*', 'h', header, 't', tokens)
  if type(added) == 'table' and added.err then return 'error ' .. added.err end
  -- Nothing below can fail: the state key is a string or absent, the entry
  -- id and the cost were checked.
  redis.call('SET', state_key, 'done ' .. added, 'EX', retention)
  ack_and_delete(KEYS[1], group, entry_id)
  -- Only jobs that came through the submit script were counted in the
  -- backlog; an entry written by hand (no state key) was not.
  if state then release_backlog(KEYS[3], cost) end
  -- The batch counted this job when submit.lua queued it (a state key).
  if state and record ~= KEYS[3] then num_done[record] = (num_done[record] or 0) + 1 end
  return 'ok'
end

local replies = {}
for i = 1, num_jobs do
  local a = 3 + 4 * (i - 1)
  replies[i] = complete_one(
    KEYS[3 + i], KEYS[3 + num_jobs + i], ARGV[a], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3])
end
-- Cannot fail: a record that is not a hash (expired, deleted) is skipped.
for record, num in pairs(num_done) do batch_settle(record, 'done', retention, num) end
return replies

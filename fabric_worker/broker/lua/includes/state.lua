-- The job-state key of a queued job: "queued <entry id> <nonce>". The entry id
-- says which entry may settle the job; the nonce lets a retried submit tell
-- its own earlier write from someone else's.
local function queued_state(entry_id, nonce)
  return 'queued ' .. entry_id .. ' ' .. nonce
end

local function is_queued_as(state, entry_id)
  return string.sub(state, 1, 8 + #entry_id) == 'queued ' .. entry_id .. ' '
end

local function nonce_of(state)
  return string.match(state, '^queued [^ ]+ (.*)$') or ''
end

-- A finished job's state: "dead", or "done <result entry id>" so a lookup by id
-- can read its result back ("done" alone from before the entry id was kept).
local function is_done(state)
  return state == 'done' or string.sub(state, 1, 5) == 'done '
end

local function is_finished(state)
  return state == 'dead' or is_done(state)
end

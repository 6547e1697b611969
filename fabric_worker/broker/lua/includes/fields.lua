-- The h and t fields of a stream entry's flat field list, byte for byte
-- (empty strings where one is missing).
local function job_fields(fields)
  local h, t = '', ''
  for i = 1, #fields, 2 do
    if fields[i] == 'h' then h = fields[i + 1] end
    if fields[i] == 't' then t = fields[i + 1] end
  end
  return h, t
end

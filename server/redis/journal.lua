-- journal.lua - read the decision journal of every replica, oldest first.
--
--   EVALSHA <sha> 1 <tag>ver  start_id count
--
-- Answers {last_id, event1, id1, detail1, ...}: the entries of <tag>journal from
-- start_id (exclusive, "0-0" for the first) that journal a decision (events
-- reserve, decision, refuse), from at most count entries read; last_id is the last
-- entry read ('' when none), where the next page starts.
local start, count = ARGV[1], tonumber(ARGV[2])
if #ARGV ~= 2 or not count or count < 1 or count > 10000 then
  return redis.error_reply('bad_request journal arguments')
end
local rows = redis.call('XRANGE', tag .. 'journal', '(' .. start, '+', 'COUNT', count)
local reply = {''}
for _, row in ipairs(rows) do
  reply[1] = row[1]
  local f = {}
  for i = 1, #row[2], 2 do f[row[2][i]] = row[2][i + 1] end
  if (f.event == 'reserve' or f.event == 'decision' or f.event == 'refuse') and f.detail then
    reply[#reply + 1] = f.event
    reply[#reply + 1] = row[1]
    reply[#reply + 1] = f.detail
  end
end
return reply

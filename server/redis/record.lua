-- record.lua - journal one decision that holds nothing (a throttle, a refusal by
-- the policies, a check with reserve = false).
--
--   EVALSHA <sha> 1 <tag>ver  decision_id journal_detail journal_maxlen
--
-- Appends {event 'decision', id, detail} to <tag>journal. Answers {'ok'}.
if #ARGV ~= 3 then return redis.error_reply('bad_request record arguments') end
journal(ARGV[3], 'decision', ARGV[1], ARGV[2])
return {'ok'}

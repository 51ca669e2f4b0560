-- admin.lua - the admin journal of every replica: each key and budget change with
-- the key that made it, in the stream <tag>admin (capped).
--
--   EVALSHA <sha> 1 <tag>ver  add by action target detail maxlen
--   EVALSHA <sha> 1 <tag>ver  read start_id count
--
-- add appends {at_us (Redis TIME), by, action, target, detail}, capped near maxlen
-- entries, and answers {'ok'}. read answers {last_id, id1, at_us1, by1, action1,
-- target1, detail1, ...}: at most count entries after start_id ("0-0": the first),
-- oldest first; last_id is the last one read ('' when none).
local mode = ARGV[1]
if mode == 'add' and #ARGV == 6 then
  local n = tonumber(ARGV[6])
  if not n or n < 1 then return redis.error_reply('bad_request admin arguments') end
  redis.call('XADD', tag .. 'admin', 'MAXLEN', '~', int(n), '*', 'at_us', int(now_us()),
             'by', ARGV[2], 'action', ARGV[3], 'target', ARGV[4], 'detail', ARGV[5])
  return {'ok'}
end
local count = tonumber(ARGV[3])
if mode ~= 'read' or #ARGV ~= 3 or not count or count < 1 or count > 1000 then
  return redis.error_reply('bad_request admin arguments')
end
local rows = redis.call('XRANGE', tag .. 'admin', '(' .. ARGV[2], '+', 'COUNT', count)
local reply = {''}
for _, row in ipairs(rows) do
  local f = {}
  for i = 1, #row[2], 2 do f[row[2][i]] = row[2][i + 1] end
  reply[1] = row[1]
  for _, v in ipairs({row[1], f.at_us or '0', f.by or '', f.action or '', f.target or '',
                      f.detail or ''}) do
    reply[#reply + 1] = v
  end
end
return reply

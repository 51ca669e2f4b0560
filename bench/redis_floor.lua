-- redis_floor.lua - the Redis commands one decision of the Redis store sends, and
-- nothing else: no parsing, no checks, no decisions, constant arguments.
--
--   EVALSHA <sha> 0 <part> <hold id> <decisions>
--
-- part is "reserve" (the 11 commands reserve.lua runs for a hold over three
-- counters), "settle" (the 13 settle.lua runs for its settle, with the hour's
-- rollup) or "empty" (none: what a call itself costs). The command list is what
-- MONITOR shows for one decision of bench/redis_ledger (docs/benchmarks.md, "The
-- floor: the commands alone"); the values are of the same sizes. decisions > 1 runs
-- the part for that many holds in one call (ids hold id .. "-" .. n), to show what
-- batching decisions into one call would save.
--
-- Why: the Redis store's speed target needs Redis to spend a given CPU per decision.
-- This script is the least any script sending these commands can cost, so bench/
-- redis_floor.sh can tell how far cuts inside the scripts can go.
local part, id, n = ARGV[1], ARGV[2], tonumber(ARGV[3]) or 1
local c1, c2, c3 = '{f:}c:org:bench/team:t/1', '{f:}c:org:bench/2', '{f:}c:org:bench/user:u/3'
local hold = string.rep('h', 190)
local detail = string.rep('d', 200)
local group = '["org:bench","team:t","user:u","bench","openai","gpt-4o","code-review"]'

local function reserve(h)
  redis.call('GET', '{f:}ver')
  redis.call('TIME')
  redis.call('HMGET', c1, 'u', 'p', 'h')
  redis.call('HMGET', c2, 'u', 'p', 'h')
  redis.call('HGETALL', c3)
  redis.call('SET', '{f:}hd:' .. h, hold)
  redis.call('HINCRBY', c1, 'h', 1893)
  redis.call('HINCRBY', c2, 'h', 1893)
  redis.call('HINCRBY', c3, 'h', 1893)
  redis.call('ZADD', '{f:}hx', 1796228380132187, h)
  redis.call('XADD', '{f:}journal', 'MAXLEN', '~', 1000000, '*', 'event', 'reserve', 'id', h,
             'detail', detail)
end

local function settle(h)
  redis.call('TIME')
  redis.call('GET', '{f:}hd:' .. h)
  redis.call('HMGET', c1, 'u', 'p', 'h')
  redis.call('HSET', c1, 'h', 0, 'u', 5028)
  redis.call('HMGET', c2, 'u', 'p', 'h')
  redis.call('HSET', c2, 'h', 0, 'u', 5028)
  redis.call('HGETALL', c3)
  redis.call('HSET', c3, 'h', 0, 'b14968569', 5028)
  redis.call('SET', '{f:}hd:' .. h, hold)
  redis.call('ZREM', '{f:}hx', h)
  redis.call('XADD', '{f:}journal', 'MAXLEN', '~', 1000000, '*', 'event', 'settle', 'id', h)
  redis.call('HGET', '{f:}ru:1796227200', group)
  redis.call('HSET', '{f:}ru:1796227200', group, '0,5028,0,0,0,0,0')
end

local run = ({reserve = reserve, settle = settle, empty = function() end})[part]
if not run then return redis.error_reply('bad_request part ' .. tostring(part)) end
if n == 1 then
  run(id)
else
  for i = 1, n do run(id .. '-' .. i) end
end
return n

-- redis_settle.lua - the second half of what discernd does per decision, as a Redis
-- script: replace a hold by the actual usage, idempotent by id.
--
--   EVALSHA <sha> 1 hold:<id> <id> <input_tokens> <output_tokens>
--
-- Why: see bench/redis_reserve.lua. The actual is re-estimated from the real token
-- counts with the model the hold was taken for; every budget the hold names gets its
-- held amount released and the actual added to used; the hold leaves the expiry set
-- and is kept a minute marked settled, so a repeated settle returns the same charge
-- and charges nothing more. Returns the charge (micro-units); an unknown id is an
-- error.
local hold, id = KEYS[1], ARGV[1]
local h = redis.call('HMGET', hold, 'amount', 'model', 'budgets', 'settled')
local amount = tonumber(h[1])
if not amount then
  return redis.error_reply('unknown_reservation ' .. id)
end
if h[4] then
  return tonumber(h[4])
end
local f = redis.call('HMGET', 'factors:' .. h[2], 'in', 'out')
local input, output = tonumber(ARGV[2]), tonumber(ARGV[3])
if not input or not output or input < 0 or output < 0 then
  return redis.error_reply('bad_request tokens')
end
local actual = math.ceil(input * tonumber(f[1]) + output * tonumber(f[2]))
for key in string.gmatch(h[3], '%S+') do
  redis.call('HINCRBY', key, 'held', -amount)
  redis.call('HINCRBY', key, 'used', actual)
end
redis.call('HSET', hold, 'settled', actual)
redis.call('EXPIRE', hold, 60)
redis.call('ZREM', 'holds:expiry', id)
return actual

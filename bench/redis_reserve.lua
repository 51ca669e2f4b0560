-- redis_reserve.lua - the first half of what discernd does per decision, as a Redis
-- script: estimate the request's upper bound and hold it on its budget, all or nothing,
-- under an id, with an expiry.
--
--   EVALSHA <sha> 2 hold:<id> <budget key> <id> <model> <input_tokens> <output_tokens>
--           <now> <ttl_s>
--
-- Why: bench/run.sh compares discernd's check + settle with Redis doing the same two
-- steps (bench/redis_pair.c drives it, then bench/redis_settle.lua). Amounts are
-- integer micro-units like discernd's ledger; the estimate is tokens times the model's
-- per-token factors (hash factors:<model>, fields in and out). The budget is a hash
-- {used, held, limit}; the hold is a hash {amount, model, budgets} at hold:<id>, and
-- its expiry is in the sorted set holds:expiry (what an expiry sweeper reads). A
-- repeated id holds nothing more (idempotent). Returns 1 (held) or 0 (refused: the
-- budget would be exceeded); a budget or model without data is an error.
local hold, id = KEYS[1], ARGV[1]
if redis.call('EXISTS', hold) == 1 then
  return 1
end
local f = redis.call('HMGET', 'factors:' .. ARGV[2], 'in', 'out')
local fin, fout = tonumber(f[1]), tonumber(f[2])
if not fin or not fout then
  return redis.error_reply('unknown_model ' .. ARGV[2])
end
local input, output = tonumber(ARGV[3]), tonumber(ARGV[4])
local now, ttl = tonumber(ARGV[5]), tonumber(ARGV[6])
if not input or not output or input < 0 or output < 0 or not now or not ttl then
  return redis.error_reply('bad_request arguments')
end
local amount = math.ceil(input * fin + output * fout)

for i = 2, #KEYS do
  local b = redis.call('HMGET', KEYS[i], 'used', 'held', 'limit')
  local limit = tonumber(b[3])
  if not limit then
    return redis.error_reply('unknown_budget ' .. KEYS[i])
  end
  if (tonumber(b[1]) or 0) + (tonumber(b[2]) or 0) + amount > limit then
    return 0
  end
end
local budgets = {}
for i = 2, #KEYS do
  redis.call('HINCRBY', KEYS[i], 'held', amount)
  budgets[#budgets + 1] = KEYS[i]
end
redis.call('HSET', hold, 'amount', amount, 'model', ARGV[2], 'budgets', table.concat(budgets, ' '))
redis.call('ZADD', 'holds:expiry', now + ttl, id)
return 1

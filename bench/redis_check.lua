-- redis_check.lua - the budget check discernd is compared with, as a Redis script.
--
--   EVALSHA <sha> 1 <budget key> <model> <input_tokens> <output_tokens>
--
-- Why: bench/run.sh measures discernd's check+reserve against Redis doing the same
-- shape of work in one embedded Lua call, on the same machine in the same run.
-- The script reads the budget's used and limit (a hash, amounts in integer
-- micro-units like discernd's ledger), estimates the request from its token counts
-- times the model's per-token factors (hash `factors:<model>`, fields `in` and
-- `out`, micro-units per token), compares, increments `used` when the request fits
-- and returns {"allow", used} or {"refuse", used}. A budget or model without data
-- is an error, so a benchmark that misses its keys fails instead of measuring a
-- cheaper path.
local budget = redis.call('HMGET', KEYS[1], 'used', 'limit')
local limit = tonumber(budget[2])
if not limit then
  return redis.error_reply('unknown_budget ' .. KEYS[1])
end
local used = tonumber(budget[1]) or 0

local f = redis.call('HMGET', 'factors:' .. ARGV[1], 'in', 'out')
local fin, fout = tonumber(f[1]), tonumber(f[2])
if not fin or not fout then
  return redis.error_reply('unknown_model ' .. ARGV[1])
end
local input, output = tonumber(ARGV[2]), tonumber(ARGV[3])
if not input or not output or input < 0 or output < 0 then
  return redis.error_reply('bad_request tokens')
end

local estimate = math.ceil(input * fin + output * fout)
if used + estimate > limit then
  return {'refuse', used}
end
return {'allow', redis.call('HINCRBY', KEYS[1], 'used', estimate)}

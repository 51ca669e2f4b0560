-- budgets.lua: refuse a request that would exceed one of its budgets, and throttle it
-- while a rate budget is empty.
--
-- This is the policy most organisations start from; read it as a tutorial.
--
-- A policy file returns a table. `decide(req, ctx)` is called for every request and
-- answers with allow(reason), throttle{retry_after=, reason=}, refuse(reason) or nil
-- (no opinion). All policies run; the most restrictive answer wins.
--
-- ctx.budgets() lists every budget that applies to the request's subject (its org,
-- team, user and key), each as a read-only table:
--   selector  "team:*"         as configured
--   counter   "team:infra"     the concrete counter this request is charged to
--   metric    "gco2e"          energy_wh, gco2e, water_ml, pe_mj, cost, tokens, requests
--   window    "month"          calendar (day/week/month/year), "rolling:1h", "rate:100/1m"
--   limit, used, held, remaining, request   in the metric's unit (g, Wh, mL, ...)
--   resets_at                 unix seconds
--   retry_after               seconds until this request fits (0 when it does); for a
--                             rate budget, when the next token it needs is there
--   would_exceed              used + held + request > limit
-- The ledger computed all of this before the policies ran, so this policy only has to
-- explain it. ctx.budgets("would_exceed") lists only the budgets with would_exceed
-- set, in the same order: most requests fit, so this policy usually has nothing to read.

-- Units for the messages.
local UNITS = {
    energy_wh = "Wh", gco2e = "g CO2e", water_ml = "mL", pe_mj = "MJ",
    cost = "", tokens = " tokens", requests = " requests",
}

local function amount(b, v)
    return string.format("%.4g%s", v, UNITS[b.metric] or "")
end

-- ipairs is a global: reading it through a local copy made when the file loads skips
-- a lookup in the policy's (frozen) environment on every request.
local ipairs = ipairs

-- Rate budgets ("rate:100/1m") refill over time: waiting is the answer.
local function is_rate(b)
    return string.sub(b.window, 1, 5) == "rate:"
end

return {
    name = "budgets",
    mode = "enforce",   -- "shadow" would record the answer without acting on it
    on_error = "refuse", -- if this policy breaks, fail closed

    decide = function(req, ctx)
        local wait -- the rate budget that needs the longest wait, if any
        for _, b in ipairs(ctx.budgets("would_exceed")) do
            if not is_rate(b) then
                -- The first exceeded budget is enough to say no; name it and say
                -- when it resets so the user knows what to do.
                return refuse(string.format(
                    "budget %s (%s per %s) would be exceeded: %s used of %s, this request needs %s; resets %s",
                    b.counter, b.metric, b.window, amount(b, b.used + b.held),
                    amount(b, b.limit), amount(b, b.request), utc(b.resets_at)))
            end
            if not wait or b.retry_after > wait.retry_after then wait = b end
        end
        if wait then
            -- Not when the bucket is full again, but when it has room for this request:
            -- a wait too long idles the client, one too short makes it hammer us.
            return throttle{
                retry_after = math.max(1, wait.retry_after),
                reason = string.format("rate budget %s (%s per %s) is empty until %s",
                    wait.counter, wait.metric, wait.window,
                    utc(ctx.now() + math.max(1, wait.retry_after))),
            }
        end
        return nil -- within every budget: no objection
    end,
}

-- purpose.lua: weigh the declared purpose against the carbon budgets.
--
-- Discretionary purposes (marketing copy, entertainment...) are refused once the
-- team has used 80% of its carbon budget, keeping the rest for real work. Essential
-- purposes (health, accessibility, safety, research...) are allowed as long as the
-- organisation has any carbon budget left. The classes come from purposes.lua:
-- req.purpose_class is already computed for the request.
--
-- ctx.budget(selector, metric) returns the first applying budget that matches, or
-- nil: the selector may be a kind ("team"), a configured selector ("team:*") or a
-- counter ("team:infra").

local DISCRETIONARY_SHARE = 0.8 -- of the team's carbon budget

return {
    name = "purpose",
    on_error = "refuse",

    decide = function(req, ctx)
        local class = req.purpose_class

        if class == "essential" then
            local org = ctx.budget("org", "gco2e")
            if org and org.remaining <= 0 then
                return refuse(string.format(
                    "the organisation's carbon budget %s is exhausted, even for essential purposes; resets %s",
                    org.counter, utc(org.resets_at)))
            end
            return allow("essential purpose: " .. (req.purpose or ""))
        end

        if class == "discretionary" then
            local team = ctx.budget("team", "gco2e")
            if team and team.limit > 0 then
                local share = (team.used + team.held) / team.limit
                if share >= DISCRETIONARY_SHARE then
                    return refuse(string.format(
                        "purpose '%s' is discretionary and %s has used %d%% of its carbon budget (discretionary use stops at %d%%)",
                        req.purpose, team.counter, math.floor(share * 100),
                        math.floor(DISCRETIONARY_SHARE * 100)))
                end
            end
        end

        return nil
    end,
}

-- purpose.lua: weigh the declared purpose against the carbon budgets.
--
-- Discretionary purposes (marketing copy, entertainment...) are refused once the
-- team has used 80% of its carbon budget, keeping the rest for real work. Essential
-- purposes (health, accessibility, safety, research...) are not held to that 80% mark,
-- but they are not exempt from budgets: every budget binds for every purpose, so a
-- research request on a team over its budget is refused (by budgets.lua, and by the
-- ledger's hold in any case). That is deliberate: a budget is the limit an admin set,
-- and a purpose the caller declares cannot lift it. To give essential work its own
-- room, give it its own budget (a team or key of its own). The classes come from
-- purposes.lua: req.purpose_class is already computed for the request.
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
            -- An opinion, not an exemption: budgets.lua still refuses what would
            -- exceed any budget, and a refusal wins over this allow.
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

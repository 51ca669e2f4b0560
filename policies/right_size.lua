-- right_size.lua: point to a smaller model when it would do the job for far less.
--
-- When a smaller model of the same provider would cost less than a third of this
-- request's carbon footprint, the answer carries a suggestion {provider, model}. For
-- discretionary purposes the request is also throttled: use the smaller model now, or
-- retry later.
--
-- ctx.models(provider) lists the provider's models as {name=, params_b=} (active
-- parameters in billions, 0 when unknown), smallest first. ctx.estimate is this
-- request's footprint (ranges per metric: ctx.estimate.gco2e.max, in grams), and
-- calling it asks "what if": ctx.estimate{model = "x"} estimates the same request on
-- another model (nil, message when the model is unknown).

local RATIO = 1 / 3          -- suggest when the smaller model costs under this share
local RETRY_AFTER = 300      -- seconds, for throttled discretionary requests

local function find(models, name)
    for _, m in ipairs(models) do
        if m.name == name then return m end
    end
end

-- The largest model smaller than `current` that costs under RATIO of `footprint`.
local function smaller_model(ctx, models, current, footprint)
    for i = #models, 1, -1 do -- largest first: the most capable fitting choice
        local m = models[i]
        if m.params_b > 0 and m.params_b < current.params_b then
            local alt = ctx.estimate{model = m.name}
            if alt and alt.gco2e.max < footprint * RATIO then return m, alt end
        end
    end
end

return {
    name = "right-size",
    on_error = "allow", -- advice only: a bug here must not block anyone

    decide = function(req, ctx)
        local models = ctx.models(req.provider)
        local current = models and find(models, req.model)
        local footprint = ctx.estimate.gco2e.max
        if not current or current.params_b <= 0 or footprint <= 0 then return nil end

        local m, alt = smaller_model(ctx, models, current, footprint)
        if not m then return nil end

        local suggest = {provider = req.provider, model = m.name}
        local why = string.format("%s would need %.3g g CO2e instead of %.3g g",
            m.name, alt.gco2e.max, footprint)
        if req.purpose_class == "discretionary" then
            return throttle{retry_after = RETRY_AFTER, reason = why .. " for a discretionary purpose",
                            suggest = suggest}
        end
        return allow(why, {suggest = suggest})
    end,
}

-- right_size.lua: point to a smaller model when it would do the job for far less.
--
-- When a smaller model of the same provider would cost less than a third of this
-- request's carbon footprint, the answer suggests it (suggest = "name": a model of
-- the request's provider; {provider =, model =} names another provider's). For
-- discretionary purposes the request is also throttled: use the smaller model now, or
-- retry later.
--
-- ctx.models(provider) lists the provider's models as {name=, params_b=} (active
-- parameters in billions, 0 when unknown), smallest first; ctx.model(name, provider)
-- finds one, and ctx.model() the request's own. Aliases are resolved before policies
-- run: req.model is the catalogue's name ("claude-opus-4-1" arrives as
-- "claude-opus-4-1-20250805"), so an alias gets the same advice as the model it names.
-- ctx.estimate is this request's footprint (ranges per metric: ctx.estimate.gco2e.max,
-- in grams), and calling it asks "what if": ctx.estimate("x") estimates the same
-- request on another model (nil and a message when the model is unknown;
-- ctx.estimate{model =, zone =, ...} changes other fields).

local RATIO = 1 / 3          -- suggest when the smaller model costs under this share
local RETRY_AFTER = 300      -- seconds, for throttled discretionary requests

-- Globals are read through the policy's frozen environment; a local copy made once,
-- when the file loads, is read directly (this policy runs on every request). Likewise
-- a field read through ctx, req or a model goes through a read-only proxy: each one
-- used twice is read once into a local.
local format, allow, throttle = string.format, allow, throttle

-- The largest model that costs under RATIO of `footprint`, and its footprint in grams
-- (gco2e.max, as `footprint`). The footprint grows with
-- the parameter count (energy is affine in it), so only models under RATIO of the
-- current size can qualify: ctx.models(provider, below) also says how many models,
-- from the start of the list, are smaller than `below`; the others are not even
-- estimated. Policies run on every request, so cheap tests come first and what-if
-- estimates last.
local function smaller_model(ctx, provider, params_b, footprint)
    local models, n = ctx.models(provider, params_b * RATIO)
    local tried -- models of the same size cost about the same: estimate each size once
    for i = n, 1, -1 do -- largest first: the most capable model that fits
        local m = models[i]
        local size = m.params_b
        if size > 0 and size ~= tried then
            tried = size
            local alt = ctx.estimate(m.name)
            local g = alt and alt.gco2e.max
            if g and g < footprint * RATIO then return m, g end
        end
    end
end

return {
    name = "right-size",
    on_error = "allow", -- advice only: a bug here must not block anyone

    decide = function(req, ctx)
        local current = ctx.model() -- the request's model, an alias resolved
        local footprint = ctx.estimate.gco2e.max
        if not current or footprint <= 0 then return nil end
        local params_b = current.params_b
        if params_b <= 0 then return nil end

        local m, g = smaller_model(ctx, req.provider, params_b, footprint)
        if not m then return nil end

        local suggest = m.name -- of the request's provider
        local why = format("%s would need %.3g g CO2e instead of %.3g g", suggest, g, footprint)
        if req.purpose_class == "discretionary" then
            return throttle{retry_after = RETRY_AFTER, reason = why .. " for a discretionary purpose",
                            suggest = suggest}
        end
        return allow{reason = why, suggest = suggest}
    end,
}

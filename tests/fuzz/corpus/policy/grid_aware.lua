-- grid_aware.lua: defer discretionary work while the grid is dirty.
--
-- Off by default (enabled = false): it shows the mechanism. Turn it on once a live
-- intensity feed pushes values (the annual average alone never triggers it).
--
-- ctx.grid(zone) returns the zone's carbon intensity in gCO2e/kWh and its source,
-- "live" (pushed by an admin or a feed, still valid) or "annual" (the catalogue's
-- average), or nil when unknown. ctx.grid_forecast(zone) lists the known forecast
-- as {at=, gco2e_kwh=} points, soonest first. Without a zone argument both use the
-- request's zone (req.zone, or the provider's zone from the estimate).

local THRESHOLD = 300           -- gCO2e/kWh: above this, defer what can wait
local DEFERRABLE = {discretionary = true}
local DEFAULT_WAIT = 3600       -- seconds, when no cleaner hour is forecast
local MAX_WAIT = 12 * 3600      -- never defer further than this

-- The first forecast point from now on that is under the threshold, within MAX_WAIT.
local function cleaner_hour(ctx, zone)
    local now = ctx.now()
    for _, p in ipairs(ctx.grid_forecast(zone)) do
        if p.at > now and p.at - now <= MAX_WAIT and p.gco2e_kwh <= THRESHOLD then
            return p
        end
    end
end

return {
    name = "grid-aware",
    enabled = false,
    on_error = "allow",

    decide = function(req, ctx)
        if not DEFERRABLE[req.purpose_class] then return nil end
        local intensity, source = ctx.grid(req.zone)
        if not intensity or source ~= "live" or intensity <= THRESHOLD then return nil end

        local p = cleaner_hour(ctx, req.zone)
        if p then
            return throttle{
                retry_after = p.at - ctx.now(),
                reason = string.format("grid in %s is at %.0f gCO2e/kWh; %.0f expected at %s",
                    req.zone, intensity, p.gco2e_kwh, utc(p.at)),
            }
        end
        return throttle{
            retry_after = DEFAULT_WAIT,
            reason = string.format("grid in %s is at %.0f gCO2e/kWh (over %d); no cleaner hour forecast",
                req.zone, intensity, THRESHOLD),
        }
    end,
}

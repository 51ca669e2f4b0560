-- grid_aware_test.lua: tests of grid_aware.lua. decide{} runs it whether it is
-- enabled or not; decide_all{} runs it only when its `enabled` switch is on, and the
-- last test follows that switch (enabled()) rather than assuming either.
--
-- grid{zone=, gco2e_kwh=, live=true, valid_until=, forecast={{at=, gco2e_kwh=}...}}
-- sets what ctx.grid() and ctx.grid_forecast() see.

local NOW = 1767225600

test("a discretionary request on a dirty grid waits for the forecast cleaner hour", function()
    clock(NOW)
    grid{zone = "DEU", gco2e_kwh = 450, forecast = {
        {at = NOW, gco2e_kwh = 450}, {at = NOW + 3600, gco2e_kwh = 380},
        {at = NOW + 7200, gco2e_kwh = 210}}}
    expect(decide{zone = "DEU", purpose = "entertainment"})
        .to_throttle("grid in DEU is at 450 gCO2e/kWh; 210 expected at 2026-01-01T02:00:00Z")
        .to_retry_after(7200)
end)

test("without a forecast the request waits an hour", function()
    grid{zone = "DEU", gco2e_kwh = 450}
    expect(decide{zone = "DEU", purpose = "entertainment"})
        .to_throttle("no cleaner hour forecast").to_retry_after(3600)
end)

test("productive work is never deferred", function()
    grid{zone = "DEU", gco2e_kwh = 450}
    expect(decide{zone = "DEU", purpose = "code"}).to_abstain()
end)

test("a clean grid lets discretionary work through", function()
    grid{zone = "FRA", gco2e_kwh = 40}
    expect(decide{zone = "FRA", purpose = "entertainment"}).to_abstain()
end)

test("the annual average alone never triggers it", function()
    grid{zone = "POL", gco2e_kwh = 700, live = false}
    expect(decide{zone = "POL", purpose = "entertainment"}).to_abstain()
end)

test("an expired live value falls back to the annual average", function()
    clock(NOW)
    grid{zone = "DEU", gco2e_kwh = 250, live = false}
    grid{zone = "DEU", gco2e_kwh = 450, valid_until = NOW - 1}
    expect(decide{zone = "DEU", purpose = "entertainment"}).to_abstain()
end)

test("decide_all runs it exactly when its enabled switch is on", function()
    grid{zone = "DEU", gco2e_kwh = 450}
    local d = decide_all{zone = "DEU", purpose = "entertainment"}
    local ran = false
    for _, v in ipairs(d.verdicts) do
        if v.policy == "grid-aware" then ran = true end
    end
    ok(ran == enabled(), string.format("grid-aware ran: %s, enabled: %s", tostring(ran),
        tostring(enabled())))
end)

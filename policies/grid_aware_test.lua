-- grid_aware_test.lua: tests of grid_aware.lua (disabled in production, tested here).
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

test("it is off in production: decide_all does not run it", function()
    grid{zone = "DEU", gco2e_kwh = 450}
    local d = decide_all{zone = "DEU", purpose = "entertainment"}
    for _, v in ipairs(d.verdicts) do
        ok(v.policy ~= "grid-aware", "grid-aware ran although it is disabled")
    end
end)

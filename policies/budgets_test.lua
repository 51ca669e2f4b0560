-- budgets_test.lua: tests of budgets.lua (run them with `discern policy test`).
--
-- decide{...} runs budgets.lua alone on a request; decide_all{...} runs every enabled
-- policy. budget{...} declares a budget: it applies when its selector matches the
-- request's subject, and its `request` and `would_exceed` are computed from the
-- estimate, as the ledger does. clock(t) sets ctx.now().

clock(1767225600) -- 2026-01-01T00:00:00Z, for every test of this file

test("a request within every budget gets no objection", function()
    budget{selector = "team:*", metric = "gco2e", window = "month", limit = 1000, used = 10}
    expect(decide{team = "infra", estimate = {gco2e = 5}}).to_abstain()
end)

test("a request that would exceed the team's carbon budget is refused, naming it", function()
    budget{selector = "team:*", metric = "gco2e", window = "month", limit = 50, used = 48,
           resets_at = 1769904000}
    expect(decide{team = "infra", estimate = {gco2e = 4}})
        .to_refuse("budget team:infra (gco2e per month) would be exceeded")
        .to_refuse("resets 2026-02-01T00:00:00Z")
end)

test("held amounts count against the budget", function()
    budget{selector = "user:ana", metric = "energy_wh", limit = 100, used = 50, held = 49}
    expect(decide{user = "ana", estimate = {energy_wh = 2}}).to_refuse("user:ana")
end)

test("a budget of another team does not apply", function()
    budget{selector = "team:data", metric = "gco2e", limit = 1, used = 1}
    expect(decide{team = "infra", estimate = {gco2e = 4}}).to_abstain()
end)

test("an empty rate budget throttles until the next token is there, not the full bucket", function()
    budget{selector = "user:*", metric = "requests", window = "rate:2/1m", limit = 2,
           used = 2, resets_at = 1767225600 + 60}
    expect(decide{user = "ana"}).to_throttle("rate budget user:ana").to_retry_after(30)
        .to_throttle("until 2026-01-01T00:00:30Z")
end)

test("held requests on a rate budget wait for the same next token as settled ones", function()
    budget{selector = "user:*", metric = "requests", window = "rate:2/1m", limit = 2, held = 2}
    expect(decide{user = "ana"}).to_throttle("rate budget user:ana").to_retry_after(30)
end)

test("a rate budget waits for as many tokens as the request needs", function()
    budget{selector = "user:*", metric = "tokens", window = "rate:600/1m", limit = 600,
           used = 500}
    -- 500 + 300 > 600: 200 tokens must refill, at 10 a second
    expect(decide{user = "ana", output_tokens = 300}).to_throttle().to_retry_after(20)
end)

test("an exceeded calendar budget wins over an empty rate budget", function()
    budget{selector = "user:*", metric = "requests", window = "rate:10/1m", limit = 10, used = 10}
    budget{selector = "org:acme", metric = "tokens", window = "day", limit = 1000, used = 900}
    expect(decide{org = "acme", user = "ana", output_tokens = 500}).to_refuse("org:acme (tokens per day)")
end)

test("all shipped policies together: the budget refusal wins", function()
    budget{selector = "team:*", metric = "gco2e", limit = 50, used = 49}
    local d = decide_all{team = "infra", purpose = "code-review", estimate = {gco2e = 4}}
    expect(d).to_refuse("team:infra")
    ok(d.policy == "budgets", "the winning policy is named")
end)

-- purpose_test.lua: tests of purpose.lua.

test("discretionary purposes are refused once the team used 80% of its carbon budget", function()
    budget{selector = "team:*", metric = "gco2e", limit = 100, used = 70, held = 10}
    expect(decide{team = "infra", purpose = "Marketing copy", estimate = {gco2e = 1}})
        .to_refuse("purpose 'Marketing copy' is discretionary and team:infra has used 80%")
end)

test("discretionary purposes pass below 80%", function()
    budget{selector = "team:*", metric = "gco2e", limit = 100, used = 79}
    expect(decide{team = "infra", purpose = "entertainment", estimate = {gco2e = 1}}).to_abstain()
end)

test("productive purposes are not judged by this policy", function()
    budget{selector = "team:*", metric = "gco2e", limit = 100, used = 99}
    expect(decide{team = "infra", purpose = "code-review", estimate = {gco2e = 1}}).to_abstain()
end)

test("unknown purposes take the default class (productive)", function()
    budget{selector = "team:*", metric = "gco2e", limit = 100, used = 99}
    expect(decide{team = "infra", purpose = "knitting patterns"}).to_abstain()
end)

test("essential purposes pass over the team's 80% mark", function()
    budget{selector = "team:*", metric = "gco2e", limit = 100, used = 95}
    budget{selector = "org:*", metric = "gco2e", limit = 1000, used = 500}
    expect(decide{org = "acme", team = "infra", purpose = "accessibility review"})
        .to_allow("essential purpose")
end)

test("essential purposes are not exempt from the team's budget", function()
    budget{selector = "team:*", metric = "gco2e", limit = 100, used = 99}
    local d = decide_all{org = "acme", team = "infra", purpose = "research",
                         estimate = {gco2e = 4}}
    expect(d).to_refuse("budget team:infra (gco2e per month) would be exceeded")
    ok(d.policy == "budgets", "refused by budgets, got " .. d.policy)
end)

test("essential purposes are refused once the org budget is exhausted", function()
    budget{selector = "org:*", metric = "gco2e", limit = 1000, used = 1000, resets_at = 1769904000}
    local d = decide_all{org = "acme", purpose = "public health research", estimate = {gco2e = 1}}
    expect(d).to_refuse("budget org:acme (gco2e per month) would be exceeded")
    ok(d.policy == "budgets", "refused by budgets, got " .. d.policy)
end)

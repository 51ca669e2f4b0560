-- right_size_test.lua: tests of right_size.lua.
--
-- model{...} declares a fake model: its footprint per 1000 output tokens feeds both
-- the request's estimate and ctx.estimate{...}, and ctx.models() lists it.

model{provider = "openai", name = "gpt-4o", alias = "gpt-4o-latest", params_b = 220, gco2e = 6.0}
model{provider = "openai", name = "gpt-4o-mini", params_b = 8, gco2e = 0.5}
model{provider = "openai", name = "gpt-4.1-mini", params_b = 30, gco2e = 2.5}
model{provider = "mistral", name = "large", params_b = 120, gco2e = 1.0}
model{provider = "mistral", name = "tiny", params_b = 1, gco2e = 0.5}

test("a much cheaper smaller model of the same provider is suggested", function()
    expect(decide{model = "gpt-4o", purpose = "code-review", output_tokens = 1000})
        .to_allow("gpt-4o-mini would need 0.5 g CO2e instead of 6 g")
        .to_suggest("gpt-4o-mini", "openai")
end)

test("the largest smaller model under a third of the footprint is chosen", function()
    model{provider = "openai", name = "gpt-4o-small", params_b = 50, gco2e = 1.9}
    expect(decide{model = "gpt-4o"}).to_allow().to_suggest("gpt-4o-small")
end)

test("discretionary purposes are throttled with the suggestion", function()
    expect(decide{model = "gpt-4o", purpose = "entertainment"})
        .to_throttle("for a discretionary purpose")
        .to_suggest("gpt-4o-mini")
        .to_retry_after(300)
end)

test("no suggestion when no smaller model is cheap enough", function()
    expect(decide{provider = "mistral", model = "large"}).to_abstain().to_not_suggest()
end)

test("the smallest model gets no suggestion", function()
    expect(decide{model = "gpt-4o-mini"}).to_abstain()
end)

test("the suggestion travels with another policy's refusal", function()
    budget{selector = "team:*", metric = "gco2e", limit = 5, used = 4}
    expect(decide_all{team = "infra", model = "gpt-4o", output_tokens = 1000})
        .to_refuse("team:infra")
        .to_suggest("gpt-4o-mini")
end)

test("an alias is treated as the model it names", function()
    expect(decide{model = "gpt-4o-latest", purpose = "code-review", output_tokens = 1000})
        .to_allow("gpt-4o-mini would need 0.5 g CO2e instead of 6 g")
        .to_suggest("gpt-4o-mini", "openai")
end)

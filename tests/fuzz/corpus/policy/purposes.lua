-- purposes.lua: the purpose taxonomy of this organisation.
--
-- Requests declare a purpose in free text ("code-review", "Marketing copy for the
-- spring sale"). Policies reason about its *class*: req.purpose_class, or
-- ctx.purpose_class(text) for any text. Edit the lists below; discern reloads them
-- with the policies.
--
-- How a purpose finds its class: the text is lower-cased and every run of characters
-- that are not letters or digits becomes "-" ("Marketing copy!" -> "marketing-copy").
-- If that whole text is listed, its class wins; otherwise the leftmost, longest run
-- of its words that is listed wins ("public health research" -> "health" ->
-- essential). Entries are normalised the same way, so "marketing copy" and
-- "marketing-copy" are the same entry. Anything else gets the default class.
return {
    default = "productive",
    classes = {
        -- Work that protects people or knowledge: passes unless the organisation
        -- has no budget left at all.
        essential = {
            "health", "medical", "accessibility", "safety", "security-incident",
            "research", "emergency",
        },
        -- Everyday work.
        productive = {
            "code", "code-review", "translation", "support", "analysis", "documentation",
            "summarisation", "search",
        },
        -- Nice to have: the first to go when budgets run short.
        discretionary = {
            "marketing", "marketing copy", "entertainment", "image generation for fun",
            "fun", "experiment", "chit-chat",
        },
    },
}

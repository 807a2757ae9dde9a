"""The OpenAI Images API door (docs/api.md, "OpenAI Images API"): its requests and answer
(schemas), their translation into a GenerationJobSpec (translation), OpenAI's mask
convention (masks), each request as one job submitted, waited for and answered
(generation), and OpenAI's error dialect (errors).

A request is one job: `n` is the job's batchSize. `seed` is diffleet's own addition (the
SDK sends it with `extra_body`)."""

DOOR = "openai"
"""The door's name on its jobs (diffleet.io/door)."""

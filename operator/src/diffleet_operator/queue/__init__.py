"""The queue manager: admission of Pending jobs into the tier queues, the admissions held
until their Queued status is written, and the tier shares that order the tiers."""

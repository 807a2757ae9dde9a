"""Compatible doors: other APIs' requests (OpenAI's Images API, Automatic1111's web UI
API) turned into GenerationJobs of the caller's tenant through the same submission as
`POST /v1/jobs`, waited for, and answered in the other API's shape."""

"""diffleet's operator: kopf handlers that take GenerationJobs to GPU workers and back."""

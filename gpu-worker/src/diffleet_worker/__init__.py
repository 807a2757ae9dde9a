"""diffleet's GPU worker: runs diffusers pipelines for the jobs the operator places on it."""

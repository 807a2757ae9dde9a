"""diffleet's REST API: a thin front door onto GenerationJob resources."""

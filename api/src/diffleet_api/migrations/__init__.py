"""Versioned SQL migrations of the API database, applied in the order of their number."""

"""Tests of the REST API: its pure pieces, and the API process against the local stack."""

"""Developer tooling of the repository (scripts and the test-model builders)."""

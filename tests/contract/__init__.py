"""Contract suites that every implementation of a plugin protocol runs (deploy backends)."""

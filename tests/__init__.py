"""Test suites; a package so that `tests.unit.reference_engine` imports from the repo root."""

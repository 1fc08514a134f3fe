"""Test suites; a package so that the shared helpers import from the repo root.

Shared by every layer: `tests.reference` (the independent model of what a query must
produce), `tests.streams` (test data and the usual queries), `tests.kafka_io` (the one
producer, and reading topics back), `tests.results` (reading what a query left in
PostgreSQL), `tests.plans` (engine queries from model queries), `tests.waiting`
(waiting on a condition).
"""

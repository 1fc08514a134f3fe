"""Batch mode: the same transforms over a bounded input, then one transactional load.

plan.py    BatchPlan from a validated config (pure; validate builds it too)
kafka.py   the Kafka input: every partition from startingOffsets to its end at start
rows.py    what goes into the table: docs per row, table layout, SQL (pure)
load.py    the load: one PostgreSQL transaction per run, refused rows isolated
job.py     the orchestration and the report

A file input is listed and read by `sources/file_listing.py`, which the
streaming file source shares.
"""

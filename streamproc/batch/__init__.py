"""Batch mode: the same transforms over a bounded input, then one transactional load.

plan.py    BatchPlan from a validated config (pure; validate builds it too)
kafka.py   the Kafka input: every partition from startingOffsets to its end at start
load.py    the load: one PostgreSQL transaction per run, refused rows isolated
collect.py decode, quality rules and the engine over the input (pure)
job.py     the orchestration and the report

A file input is listed and read by `sources/file_listing.py`, which the
streaming file source shares; what goes into the table (a document per row,
the SQL) is `sinks/load_rows.py`, which the pass-through streaming sink shares.
"""

"""The component layer: the whole runtime in one process, over in-memory adapters.

`StreamingQuery` runs exactly as in production, on a `MemorySource` (scripted
group assignments, exact or undercounting end offsets) and a
`MemoryCheckpoint` (a dict ledger that fails on command like an outage or a
refusal). Tests here take milliseconds; the integration and fault suites
prove the same runtime against the real broker and PostgreSQL.
"""

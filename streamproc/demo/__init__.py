"""`make demo`: the example pipeline on the embedded broker and PostgreSQL."""

"""streamproc: event-time stream processing from Kafka to PostgreSQL, exactly once."""

__version__ = "0.1.0"

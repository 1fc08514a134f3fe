"""Fault injection: kill -9, rebalances, outages, poison input, SQL injection (FAULTS.md)."""

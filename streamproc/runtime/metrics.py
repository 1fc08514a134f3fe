"""Prometheus metrics of the streaming runtime.

Served on STREAMPROC_METRICS_PORT when set (`start_metrics_server`). Every
record read is counted in exactly one of aggregated, late, bad or filtered.
"""

from __future__ import annotations

import os

from prometheus_client import Counter, Gauge, Histogram, start_http_server

RECORDS = Counter(
    "streamproc_records_total",
    "Records read, by outcome (aggregated, late, bad, filtered)",
    ["query", "outcome"],
)
LATE = Counter("streamproc_late_records_total", "Late records, by strategy", ["query", "strategy"])
BATCHES = Counter(
    "streamproc_batches_total",
    "Micro-batches, by result (committed, stale, failed, dead_lettered, unavailable)",
    ["query", "result"],
)
RESULT_ROWS = Counter("streamproc_result_rows_total", "Result rows written", ["query"])
COMMIT_SECONDS = Histogram(
    "streamproc_commit_seconds", "Wall time of a batch's sink transaction", ["query"]
)
WATERMARK = Gauge(
    "streamproc_watermark_ms", "Partition watermark (event time, epoch ms)", ["query", "partition"]
)
BREAKER_OPEN = Gauge(
    "streamproc_circuit_breaker_open",
    "1 while the sink circuit breaker is open or half-open (probing), 0 while closed",
    ["query"],
)

_started = False


def start_metrics_server() -> int | None:
    """Serve /metrics on STREAMPROC_METRICS_PORT if set; returns the port."""
    global _started
    port = os.environ.get("STREAMPROC_METRICS_PORT")
    if not port or _started:
        return None
    start_http_server(int(port))
    _started = True
    return int(port)

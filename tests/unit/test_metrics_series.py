"""Series a dashboard or an alert reads exist before their first increment."""

from __future__ import annotations

from prometheus_client import REGISTRY

from streamproc.runtime.metrics import unread_counter


def _value(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


def test_a_file_sources_unread_counters_start_at_0_and_count_files_and_bytes() -> None:
    ours = {"pipeline": "p-unread", "query": "q-unread"}
    count = unread_counter(ours["pipeline"], ours["query"])
    for kind in ("deleted", "truncated"):
        assert _value("streamproc_files_unread_total", **ours, kind=kind) == 0.0
        assert _value("streamproc_file_bytes_unread_total", **ours, kind=kind) == 0.0
    count("deleted", 120)
    count("deleted", 5)
    assert _value("streamproc_files_unread_total", **ours, kind="deleted") == 2.0
    assert _value("streamproc_file_bytes_unread_total", **ours, kind="deleted") == 125.0
    assert _value("streamproc_file_bytes_unread_total", **ours, kind="truncated") == 0.0

"""The progress record of a micro-batch, computed from a scripted batch (exact numbers)."""

from __future__ import annotations

import json

from streamproc.runtime.accounting import UnreadTally
from streamproc.runtime.query_progress import PHASES, build_progress, fold_phases, phase_delta
from streamproc.sinks.base import PartitionCommit, ProgressNote


def commit(partition: int, start: int, end: int, **counts: int) -> PartitionCommit:
    records = end - start
    late, bad, filtered = counts.get("late", 0), counts.get("bad", 0), counts.get("filtered", 0)
    return PartitionCommit(
        partition=partition,
        start_offset=start,
        next_offset=end,
        records=records,
        aggregated=records - late - bad - filtered,
        late=late,
        bad=bad,
        filtered=filtered,
        max_event_ts_ms=counts.get("max_ts"),
        watermark_ms=counts.get("wm"),
        min_event_ts_ms=counts.get("min_ts"),
    )


# A batch of two partitions: p0 offsets 100..159 (60 records, 2 late, 1 bad),
# p1 offsets 0..39 (40 records, 3 filtered). Runtime phase seconds below:
# fetch 0.5; decode 0.02; engine 0.03; reading other workers' watermarks
# 0.005; the commit's lock_wait 0.001, states 0.004, ledger 0.002, closing
# 0.003, sink 0.01, dead_letters 0.015, commit 0.01; `lock` overlaps them.
PHASE_SECONDS = {
    "fetch": 0.5,
    "decode": 0.02,
    "engine": 0.03,
    "watermarks": 0.005,
    "lock_wait": 0.001,
    "states": 0.004,
    "ledger": 0.002,
    "closing": 0.003,
    "sink": 0.01,
    "dead_letters": 0.015,
    "commit": 0.01,
    "lock": 0.03,
}


def scripted(**changes: object) -> object:
    args: dict[str, object] = {
        "pipeline_id": "pipe",
        "query": "q",
        "topic": "events",
        "batch_number": 7,
        "timestamp_ms": 1_700_000_000_250,
        "partitions": [
            commit(1, 0, 40, filtered=3, max_ts=1_700_000_030_000, wm=1_700_000_020_000),
            commit(0, 100, 160, late=2, bad=1, max_ts=1_700_000_060_000, wm=1_700_000_050_000),
        ],
        "phase_seconds": PHASE_SECONDS,
        "batch_seconds": 0.8,
        "since_previous_s": 2.0,
        "watermark_ms": 1_700_000_020_000,
        "state_rows_updated": 17,
        "sink_rows": 5,
    }
    args.update(changes)
    return build_progress(**args)  # type: ignore[arg-type]


def test_a_scripted_batch_gives_exact_numbers() -> None:
    progress = scripted()
    assert progress.pipeline_id == "pipe"
    assert progress.query == "q"
    assert progress.batch_id == 7
    assert [
        (p.partition, p.start_offset, p.end_offset, p.input_rows) for p in progress.partitions
    ] == [
        (0, 100, 160, 60),
        (1, 0, 40, 40),
    ]
    assert [p.batch_id for p in progress.partitions] == ["q/events/0/100-160", "q/events/1/0-40"]
    assert progress.input_rows == 100
    assert (progress.aggregated_rows, progress.late_rows, progress.bad_rows) == (94, 2, 1)
    assert progress.filtered_rows == 3
    assert progress.input_rows_per_second == 50.0  # 100 rows over the 2 s since the last fetch
    # Work is every phase but fetch: 20 + 30 + 15 + 25 + 10 = 100 ms -> 1000 rows/s.
    assert progress.processed_rows_per_second == 100 / 0.1
    assert progress.duration_ms == {
        "fetch": 500.0,
        "decode": 20.0,
        "engine": 30.0,
        "checkpoint": 15.0,
        "sink": 25.0,
        "commit": 10.0,
    }
    assert progress.batch_duration_ms == 800.0
    assert progress.max_event_ts_ms == 1_700_000_060_000
    assert progress.watermark_ms == 1_700_000_020_000
    assert (progress.state_rows_updated, progress.sink_rows) == (17, 5)


def test_phases_fold_in_batch_order_and_the_lock_is_left_out() -> None:
    folded = fold_phases({"commit": 0.002, "lock": 5.0, "fetch": 0.001, "unknown": 9.0})
    assert list(folded) == list(PHASES)
    assert folded == {"fetch": 1.0, "decode": 0.0, "engine": 0.0, "checkpoint": 0.0} | {
        "sink": 0.0,
        "commit": 2.0,
    }


def test_a_first_batch_has_no_input_rate_and_an_empty_one_no_rows() -> None:
    first = scripted(since_previous_s=None)
    assert first.input_rows_per_second is None
    empty = scripted(partitions=[], phase_seconds={"fetch": 1.0})
    assert empty.input_rows == 0
    assert empty.partitions == ()
    assert empty.processed_rows_per_second is None  # no work measured
    assert empty.max_event_ts_ms is None
    assert empty.duration_ms == dict.fromkeys(PHASES, 0.0) | {"fetch": 1000.0}


def test_only_the_preparation_phases_of_a_batch_count_between_snapshots() -> None:
    before = {"fetch": 1.0, "decode": 0.5, "commit": 3.0}
    # Meanwhile the batch in flight committed (commit, sink): not this batch's.
    after = {"fetch": 1.25, "decode": 0.75, "engine": 0.5, "commit": 4.0, "sink": 1.0}
    assert phase_delta(before, after) == {"fetch": 0.25, "decode": 0.25, "engine": 0.5}


def test_the_log_line_and_the_json_say_the_same() -> None:
    progress = scripted()
    line = progress.log_line()
    assert "\n" not in line
    assert line.startswith("pipeline=pipe query=q batch=7 rows=100 offsets=0:100-160,1:0-40 ")
    assert "input_rps=50 processed_rps=1000 " in line
    assert "watermark=2023-11-14T22:13:40.000Z " in line
    assert "state_updated=17 state_total=- " in line
    assert line.endswith("late=2 bad=1 filtered=3 sink_rows=5 breaker=closed retries=0")
    document = json.loads(progress.json())
    assert document["numInputRows"] == 100
    assert document["batchId"] == 7
    assert document["eventTime"]["watermark"] == "2023-11-14T22:13:40.000Z"
    assert [(s["partition"], s["startOffset"], s["endOffset"]) for s in document["sources"]] == [
        (0, 100, 160),
        (1, 0, 40),
    ]


def test_the_record_has_min_event_time_state_total_and_the_breaker() -> None:
    # p1's records span event times 1_700_000_001_000..030_000, p0's 002_500..060_000.
    progress = scripted(
        partitions=[
            commit(1, 0, 40, min_ts=1_700_000_001_000, max_ts=1_700_000_030_000),
            commit(0, 100, 160, min_ts=1_700_000_002_500, max_ts=1_700_000_060_000),
        ],
        state_rows_total=250,
        breaker_state="half_open",
        retries=2,
    )
    assert progress.min_event_ts_ms == 1_700_000_001_000
    line = progress.log_line()
    times = "min_event_time=2023-11-14T22:13:21.000Z max_event_time=2023-11-14T22:14:20.000Z "
    assert times in line
    assert "state_total=250 " in line
    assert line.endswith("breaker=half_open retries=2")
    document = json.loads(progress.json())
    assert document["eventTime"]["min"] == "2023-11-14T22:13:21.000Z"
    assert document["stateOperators"] == {"numRowsTotal": 250, "numRowsUpdated": 17}
    assert document["circuitBreaker"] == {"state": "half_open", "retries": 2}


def test_a_batch_without_event_times_has_no_min() -> None:
    progress = scripted(partitions=[commit(0, 0, 10)])
    assert progress.min_event_ts_ms is None
    assert json.loads(progress.json())["eventTime"]["min"] is None


def test_a_file_source_says_what_it_found_unread_on_the_line_and_in_its_source_metrics() -> None:
    progress = scripted(partitions=[commit(0, 0, 10)], unread=(1, 4_096))
    assert progress.log_line().endswith("retries=0 unread_files=1 unread_bytes=4096")
    (source,) = json.loads(progress.json())["sources"]
    assert source["metrics"] == {"numFilesUnread": 1, "numBytesUnread": 4_096}
    # A source that cannot lose input says nothing of it.
    kafka = scripted(partitions=[commit(0, 0, 10)])
    assert "unread" not in kafka.log_line()
    assert "metrics" not in json.loads(kafka.json())["sources"][0]


class _Files:
    """A file source's running counts (files, bytes) since it started."""

    def __init__(self) -> None:
        self.counts = (0, 0)

    def unread_counts(self) -> tuple[int, int]:
        return self.counts


def test_each_committed_batch_carries_what_was_found_unread_since_the_previous_one() -> None:
    source = _Files()
    tally = UnreadTally(source)
    source.counts = (1, 100)
    failed = tally.pending()  # a batch that does not commit leaves its share to the next
    assert failed == {"source_metrics": {"numFilesUnread": 1, "numBytesUnread": 100}}
    source.counts = (2, 150)
    note = ProgressNote(**tally.pending())
    assert tally.committed(note) == (2, 150)
    assert tally.pending() == {"source_metrics": {"numFilesUnread": 0, "numBytesUnread": 0}}
    source.counts = (3, 160)
    assert tally.committed(ProgressNote(**tally.pending())) == (1, 10)
    # Other sources: no fields, and None in the record.
    other = UnreadTally(object())
    assert other.pending() == {} and other.committed(None) is None

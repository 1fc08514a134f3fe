"""`streamproc status`: lag, rates, staleness and rendering, from given rows (no servers)."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from streamproc.commands.status_model import (
    EXIT_OK,
    EXIT_STALE,
    CheckpointView,
    LedgerBatch,
    PositionRow,
    QueryStatus,
    RunRow,
    TopicEnd,
    batch_rates,
    build_status,
    exit_status,
    parse_stale_after,
    partition_lag,
    recent_rate,
    staleness,
)
from streamproc.commands.status_render import text_lines, to_dict
from streamproc.config.durations import DurationError
from streamproc.sources.position import FilePosition, OffsetPosition

T0 = 1_764_000_000_000  # wall time, epoch ms
MIN = 60_000


def batch(at_ms: int, records: int, partitions: int = 2) -> LedgerBatch:
    return LedgerBatch(at_ms, partitions, records, records - 3, 2, 1, 0, 0)


def status_of(
    positions: tuple[PositionRow, ...],
    ends: dict[int, TopicEnd],
    *,
    now_ms: int = T0 + 10 * MIN,
    batches: tuple[LedgerBatch, ...] = (),
    starting: str = "earliest",
) -> QueryStatus:
    view = CheckpointView(
        registered_at_ms=T0,
        global_watermark_ms=T0 - 5 * MIN,
        positions=positions,
        batches=batches,
        run=None,
        now_ms=now_ms,
    )
    return build_status(
        pipeline_id="p",
        query="q",
        topic="t",
        starting_offsets=starting,  # type: ignore[arg-type]
        checkpoint=view,
        ends=ends,
    )


@pytest.mark.parametrize(
    ("committed", "end", "starting", "lag"),
    [
        (100, TopicEnd(0, 130), "earliest", 30),
        (130, TopicEnd(0, 130), "earliest", 0),
        (None, TopicEnd(20, 130), "earliest", 110),  # all stored records wait
        (None, TopicEnd(20, 130), "latest", None),  # starts wherever the end will be
        (100, None, "earliest", None),  # the topic no longer has the partition
        (140, TopicEnd(0, 130), "earliest", -10),  # re-created topic: shown, not hidden
    ],
)
def test_partition_lag(
    committed: int | None, end: TopicEnd | None, starting: str, lag: int | None
) -> None:
    assert partition_lag(committed, end, starting) == lag  # type: ignore[arg-type]


def test_partitions_of_the_checkpoint_and_of_the_topic_are_both_listed() -> None:
    status = status_of(
        (PositionRow(0, 50, T0 - 6 * MIN, T0 - MIN, T0 + MIN), PositionRow(3, 7, None, None, T0)),
        {0: TopicEnd(0, 80), 1: TopicEnd(0, 5), 2: TopicEnd(0, 0)},
    )
    assert [(p.partition, p.committed_offset, p.end_offset, p.lag) for p in status.partitions] == [
        (0, 50, 80, 30),
        (1, None, 5, 5),
        (2, None, 0, 0),
        (3, 7, None, None),
    ]
    assert status.total_lag == 35
    assert status.last_commit_ms == T0 + MIN
    # A Kafka offset is its own position; a partition that never committed has none.
    assert [p.position for p in status.partitions] == [
        OffsetPosition(0, 50),
        None,
        None,
        OffsetPosition(3, 7),
    ]
    assert [p.file for p in status.partitions] == [None] * 4


def test_rates_per_batch_over_the_wall_time_since_the_one_before() -> None:
    #  commits (newest first):   T0+3s: 600   T0+2s: 300   T0+1.5s: 50   T0: 999
    batches = (batch(T0 + 3000, 600), batch(T0 + 2000, 300), batch(T0 + 1500, 50), batch(T0, 999))
    assert batch_rates(batches) == [600.0, 600.0, 33.333333333333336, None]
    # The oldest batch's records arrived before the span: (600 + 300 + 50) / 3 s.
    assert recent_rate(batches) == pytest.approx(950 / 3)
    assert recent_rate(batches[:1]) is None
    assert batch_rates(()) == []
    assert batch_rates((batch(T0, 5), batch(T0, 6))) == [None, None]


@pytest.mark.parametrize(
    ("last_commit_ms", "end", "stale_after_ms", "stale"),
    [
        (T0 + 9 * MIN, 100, 5 * MIN, False),  # committed a minute ago
        (T0 + 5 * MIN, 100, 5 * MIN, True),  # exactly five minutes: stale
        (T0, 100, 5 * MIN, True),
        (T0, 50, 5 * MIN, False),  # no lag: idle, not stuck
        (T0 + 10 * MIN, 100, 0, True),  # 0: stale whenever records wait
        (T0 + 10 * MIN, 50, 0, False),
    ],
)
def test_staleness(last_commit_ms: int, end: int, stale_after_ms: int, stale: bool) -> None:
    status = status_of((PositionRow(0, 50, None, None, last_commit_ms),), {0: TopicEnd(0, end)})
    assert staleness(status, stale_after_ms).stale is stale
    assert exit_status(status, stale_after_ms) == (EXIT_STALE if stale else EXIT_OK)
    assert exit_status(status, None) == EXIT_OK


def test_a_file_source_has_no_lag_to_judge_and_says_so() -> None:
    # A file source's status has no ends (byte offsets across files make no count).
    status = status_of((PositionRow(0, 60, None, None, T0),), {})
    assert not status.lag_known
    verdict = staleness(status, 5 * MIN)
    assert (verdict.stale, verdict.reason) == (False, "lag unknown (no commit for 10 min 0 s)")
    assert "total lag unknown (file source)" in "\n".join(text_lines(status, None))
    assert to_dict(status, None)["totalLag"] is None


def test_a_query_that_never_committed_is_stale_from_its_registration() -> None:
    status = status_of((), {0: TopicEnd(0, 10)}, now_ms=T0 + 6 * MIN)
    verdict = staleness(status, 5 * MIN)
    assert verdict.stale
    assert verdict.reason == (
        "stale: no commit since it was registered for 6 min 0 s while 10 record(s) wait"
    )
    assert not staleness(status, 7 * MIN).stale


@pytest.mark.parametrize(
    ("text", "ms"),
    [("0 seconds", 0), ("0s", 0), ("0.0 minutes", 0), ("5 minutes", 300_000), ("1.5 s", 1500)],
)
def test_stale_after_takes_durations_and_zero(text: str, ms: int) -> None:
    assert parse_stale_after(text) == ms


@pytest.mark.parametrize("text", ["0 parsecs", "five minutes", "-1 s", ""])
def test_stale_after_refuses_what_is_not_a_duration(text: str) -> None:
    with pytest.raises(DurationError):
        parse_stale_after(text)


def test_json_has_every_partition_batch_and_the_breaker_not_guessed() -> None:
    status = status_of(
        (PositionRow(0, 50, T0 - 6 * MIN, T0 - MIN, T0 + MIN),),
        {0: TopicEnd(0, 80)},
        batches=(batch(T0 + MIN, 40), batch(T0, 10)),
    )
    document = json.loads(json.dumps(to_dict(status, 0)))
    assert document["partitions"] == [
        {
            "partition": 0,
            "committedOffset": 50,
            "endOffset": 80,
            "lag": 30,
            "watermark": "2025-11-24T15:54:00.000Z",
            "maxEventTime": "2025-11-24T15:59:00.000Z",
            "lastCommit": "2025-11-24T16:01:00.000Z",
        }
    ]
    assert document["totalLag"] == 30
    assert [b["numInputRows"] for b in document["recentBatches"]] == [40, 10]
    assert document["recentBatches"][0]["inputRowsPerSecond"] == pytest.approx(40 / 60)
    assert document["lastCommitAgeSeconds"] == 540.0
    assert document["eventTimeLagSeconds"] == 900.0
    assert document["circuitBreaker"]["recorded"] is False
    assert document["circuitBreaker"]["state"] is None
    assert document["stale"]["stale"] is True
    assert "stale" not in to_dict(status)


def test_text_names_each_partition_the_batches_and_the_verdict() -> None:
    view = status_of(
        (PositionRow(0, 50, T0 - 6 * MIN, None, T0 + MIN), PositionRow(1, 90, None, None, T0)),
        {0: TopicEnd(0, 80), 1: TopicEnd(0, 85)},
        batches=(batch(T0 + MIN, 40),),
    )
    status = replace(view, run=RunRow(3, "availablenow", "done", T0, T0 + 5))
    lines = text_lines(status, 5 * MIN)
    assert lines[0] == "query q (pipeline p), topic t, at 2025-11-24T16:10:00.000Z"
    table = lines[lines.index("") + 1 :]
    assert table[0].split() == [
        "partition",
        "committed",
        "end",
        "lag",
        "watermark",
        "last",
        "commit",
    ]
    assert table[1].split()[:5] == ["0", "50", "80", "30", "2025-11-24T15:54:00.000Z"]
    assert table[2].split()[:4] == ["1", "90", "85", "-5"]
    assert any("partition 1 ends below the committed offset" in line for line in lines)
    assert any(line.startswith("last 1 batch(es)") for line in lines)
    assert "bounded run 3 (availablenow): done" in "\n".join(lines)
    assert lines[-2].startswith("circuit breaker: not recorded in PostgreSQL")
    assert lines[-1] == "stale: no commit for 9 min 0 s while 30 record(s) wait"


def test_a_query_without_batches_says_so() -> None:
    lines = text_lines(status_of((), {0: TopicEnd(0, 0)}))
    assert "no committed batch yet" in lines
    assert any("last commit never" in line for line in lines)


def test_the_breaker_and_processed_rates_come_from_the_newest_progress_rows() -> None:
    newest = replace(
        batch(T0 + MIN, 40),
        processed_rows_per_second=2_000.0,
        state_rows_total=321,
        breaker="half_open",
        breaker_opened=2,
        retries=3,
        worker="h:7",
    )
    older = replace(batch(T0, 10), breaker="closed", breaker_opened=1, retries=1, worker="h:7")
    status = status_of((), {0: TopicEnd(0, 0)}, batches=(newest, older))
    document = to_dict(status)
    assert document["circuitBreaker"] == {
        "state": "half_open",
        "recorded": True,
        "at": "2025-11-24T16:01:00.000Z",
        "worker": "h:7",
        "openedSinceWorkerStart": 2,
        "retriesInRecentBatches": 4,
    }
    assert [
        (b["processedRowsPerSecond"], b["stateRowsTotal"]) for b in document["recentBatches"]
    ] == [
        (2_000.0, 321),
        (None, None),
    ]
    lines = text_lines(status)
    assert lines[-1] == (
        "circuit breaker: half_open at the last commit (h:7; it opened 2 time(s) since that "
        "worker started); 4 retried transaction attempt(s) in the last 2 batch(es)"
    )
    heading = next(i for i, line in enumerate(lines) if line.startswith("last 2 batch(es)"))
    assert lines[heading + 1].split()[-2:] == ["filt", "states"]
    assert lines[heading + 2].split()[4] == "2,000"
    assert lines[heading + 2].split()[-1] == "321"


def test_a_file_source_position_is_shown_as_file_and_byte() -> None:
    # next offset = ordinal << 40 | byte: file #1, byte 550.
    view = CheckpointView(
        registered_at_ms=T0,
        global_watermark_ms=None,
        positions=(PositionRow(0, (1 << 40) | 550, None, None, T0),),
        batches=(),
        run=None,
        now_ms=T0 + MIN,
        files={0: "data/a.jsonl", 1: "data/b.jsonl"},
    )
    status = build_status(
        pipeline_id="p",
        query="q",
        topic="data",
        starting_offsets="earliest",
        checkpoint=view,
        ends={},
    )
    (where,) = status.partitions
    assert where.position == where.file == FilePosition(1, "data/b.jsonl", 550)
    text = "\n".join(text_lines(status, None))
    assert "path data, at" in text
    assert str((1 << 40) | 550) not in text
    table = text.splitlines()[3:5]
    assert table[0].split() == ["partition", "file", "byte", "watermark", "last", "commit"]
    assert [line.split()[:3] for line in text.splitlines() if "b.jsonl" in line] == [
        ["0", "data/b.jsonl", "550"]
    ]
    (partition,) = to_dict(status)["partitions"]
    assert (partition["file"], partition["fileOrdinal"], partition["byte"]) == (
        "data/b.jsonl",
        1,
        550,
    )
    assert partition["committedOffset"] is None
    unlisted = replace(view, files={})
    status = build_status(
        pipeline_id="p",
        query="q",
        topic="data",
        starting_offsets="earliest",
        checkpoint=unlisted,
        ends={},
    )
    assert "#1 (not listed)" in "\n".join(text_lines(status, None))

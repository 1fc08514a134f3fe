"""Clear failures instead of silent or endless ones (issue 9), in memory: a sink that
refuses everything, records from the far future, watermark jumps, epoch seconds read
as milliseconds, unusable local state, interrupted bounded runs.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import pytest

from streamproc.runtime.failure_kinds import QueryFailedError
from streamproc.testing import MemoryDatabase, MemoryMessages, MemorySource, MemoryTopic
from tests.component.harness import TOPIC, fill_topic, make_plan, new_query
from tests.reference import Query
from tests.streams import AGGS, BASE_MS, MINUTE, make_stream

QUERY = Query(("user_id",), AGGS, delay_ms=5 * MINUTE, size_ms=10 * MINUTE, output_mode="update")
YEAR_MS = 365 * 86_400_000


def _refuse_all(key: tuple[object, ...]) -> str:
    return 'new row violates check constraint "no_rows"'


async def test_a_sink_refusing_every_record_stops_the_query_and_dead_letters_nothing() -> None:
    stream = make_stream(600, seed=51)
    db = MemoryDatabase(refuse_key=_refuse_all)
    messages = MemoryMessages()
    plan = make_plan(QUERY, dlq_type="kafka", dlq_topic="dlq")
    query = new_query(plan, MemorySource(fill_topic(stream)), db, messages=messages)
    with pytest.raises(QueryFailedError) as stopped:
        await query.run()
    assert str(stopped.value).startswith(
        "query q: the sink refuses every record of the batch of partition:offsets "
    )
    assert 'for the same reason: new row violates check constraint "no_rows"' in str(stopped.value)
    assert "nothing of the batch was dead-lettered" in str(stopped.value)
    assert messages.delivered == [] and db.ledger_rows("q", TOPIC) == []


async def test_small_batches_all_refused_stop_after_a_streak_of_refusals() -> None:
    # Batches too small to sample: the streak of single refusals tells it.
    stream = make_stream(100, seed=52)
    db = MemoryDatabase(refuse_key=_refuse_all)
    plan = make_plan(QUERY, max_records_per_trigger=2)
    with pytest.raises(QueryFailedError, match=r"refused 8 records in a row, each alone"):
        await new_query(plan, MemorySource(fill_topic(stream)), db).run()
    ledger = db.ledger_rows("q", TOPIC)
    assert len(ledger) == 7 and all(r.dead_lettered == 1 for r in ledger)


def _record(minute: int, **more: object) -> dict[str, object]:
    return {"user_id": "u", "event_time": BASE_MS + minute * MINUTE, "value": 1, **more}


async def test_a_record_from_the_far_future_is_bad_with_max_future_skew() -> None:
    topic = MemoryTopic(TOPIC, 1)
    for minute in range(5):
        topic.produce_json(0, _record(minute), timestamp_ms=BASE_MS + minute * MINUTE)
    topic.produce_json(0, _record(75 * 525_600), timestamp_ms=BASE_MS + 5 * MINUTE)  # 2100
    for minute in range(6, 10):
        topic.produce_json(0, _record(minute), timestamp_ms=BASE_MS + minute * MINUTE)
    db = MemoryDatabase()
    plan = make_plan(QUERY, max_future_skew_ms=86_400_000)
    stats = await new_query(plan, MemorySource(topic), db).run()
    assert (stats.records, stats.bad, stats.late, stats.aggregated) == (10, 1, 0, 9)
    without = await new_query(
        replace(plan, max_future_skew_ms=None, query_name="q2", table="q2"),
        MemorySource(topic),
        db,
    ).run()
    assert without.late == 4  # what one such record does without the guard


async def test_a_watermark_jump_is_warned_about_with_the_record_and_dates(
    caplog: pytest.LogCaptureFixture,
) -> None:
    topic = MemoryTopic(TOPIC, 1)
    for minute in (0, 1, 2):
        topic.produce_json(0, _record(minute))
    topic.produce_json(0, _record(2 * 525_600))
    plan = make_plan(QUERY)
    plan = replace(plan, spec=replace(plan.spec, jump_warning_ms=86_400_000))
    with caplog.at_level(logging.WARNING, logger="streamproc.eventtime"):
        await new_query(plan, MemorySource(topic), MemoryDatabase()).run()
    [line] = [r.getMessage() for r in caplog.records if "moved the watermark" in r.getMessage()]
    assert line == (
        f"partition 0 offset 3 (event_time {BASE_MS + 2 * 525_600 * MINUTE}) moved the watermark "
        "2 years ahead at once, from 2025-11-26T10:02:00.000Z to 2027-11-26T10:00:00.000Z: "
        "every later record of the partition older than that is late; if the record is wrong, "
        "set watermark.maxFutureSkew to make such records bad instead"
    )


async def test_epoch_seconds_under_auto_are_warned_about_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    topic = MemoryTopic(TOPIC, 1)
    for i in range(5):
        topic.produce_json(0, {"user_id": "u", "event_time": 1_764_151_200 + i, "value": 1})
    with caplog.at_level(logging.WARNING, logger="streamproc.eventtime"):
        await new_query(make_plan(QUERY), MemorySource(topic), MemoryDatabase()).run()
    lines = [r.getMessage() for r in caplog.records if "epoch milliseconds" in r.getMessage()]
    assert lines == [
        "event_time: integer 1764151200 is read as epoch milliseconds (1970-01-21T10:02:31.200Z) "
        "under eventTimeFormat auto; if it is epoch seconds (2025-11-26T10:00:00.000Z), set "
        "watermark.eventTimeFormat to epoch_seconds"
    ]


async def test_unusable_local_state_stops_with_the_path_not_as_an_outage(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    plan = make_plan(QUERY)
    query = new_query(
        plan, MemorySource(fill_topic(make_stream(50))), MemoryDatabase(), state_dir=tmp_path / "ok"
    )
    stats = await query.run()
    assert stats.records == 50
    from streamproc.state import LocalStateError, rocks_store_factory

    with pytest.raises(
        LocalStateError,
        match=rf"^local state at {blocker}/state cannot be written: Not a directory$",
    ):
        rocks_store_factory(blocker / "state")


async def test_an_interrupted_bounded_run_says_so() -> None:
    stream = make_stream(2_000, seed=53)
    db = MemoryDatabase()
    plan = make_plan(QUERY, max_records_per_trigger=50)
    source = MemorySource(fill_topic(stream))
    query = new_query(plan, source, db)

    def stop_after_a_few() -> None:
        query.request_stop()

    db.before_commit[3] = stop_after_a_few
    stats = await query.run()
    assert stats.run_id == 1 and not stats.run_complete
    assert 0 < stats.records < 2_000

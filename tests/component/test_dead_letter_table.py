"""dlqType postgresql through the whole runtime: bad, refused and quarantined records.

Every record that leaves the stream (undecodable, refused by the sink alone,
taken out by a quality rule with onFailure continue) is a row of the
dead-letter table with its reason, written in the commit of the batch that
dead-lettered it. A crash before a commit and the replay after it leave the
same rows a clean run does, each once, and the accounting identity holds for
every ledger row.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from streamproc.runtime.quality import QualityPlan, QualityRule
from streamproc.sinks.base import batch_id
from streamproc.testing import MemoryDatabase, MemorySource, MemoryTopic
from tests.component.harness import TOPIC, make_plan, new_query, table_of
from tests.reference import assert_tables_equal, expected
from tests.streams import MODE_CASES, make_stream

QUERY = MODE_CASES["update_sliding"]
DLQ = "q_dlq"
NON_NEGATIVE = QualityRule("non_negative", "range", ("value",), min=0)
#: Raw values no decoder accepts, with how the reason each must carry begins.
POISON = {
    b"\xff\xfe not utf-8": "value: not UTF-8",
    b"{not json": "value: not JSON",
    b"[1, 2]": "value: a JSON array, not an object",
}


class Crash(BaseException):
    """Stands for kill -9: nothing of the process runs after it."""


def crash() -> None:
    raise Crash()


def refuse_u3(key: tuple[object, ...]) -> str | None:
    return "value u3 cannot be stored" if key == ("u3",) else None


def poisoned_stream() -> dict[int, list[Any]]:
    """make_stream's records with poison values put in at fixed places of each partition."""
    stream: dict[int, list[Any]] = make_stream(800, seed=7, users=12)
    for p, records in stream.items():
        for i, value in enumerate(POISON):
            records.insert(min(len(records), 10 + 37 * i + p), value)
    return stream


def fill(stream: Mapping[int, Sequence[Any]]) -> MemoryTopic:
    topic = MemoryTopic(TOPIC, len(stream))
    for p, records in stream.items():
        for record in records:
            if isinstance(record, bytes):
                topic.produce(p, record, key=b"poison")
            else:
                topic.produce_json(p, record, key=f"msg-{record['seq']}".encode())
    return topic


def dead_letters(db: MemoryDatabase) -> dict[tuple[int, int], str]:
    return {(p, o): d.row.reason for (_q, _t, p, o), d in db.dead_letter_tables[DLQ].items()}


@pytest.mark.parametrize("crash_before_commit", [None, 3, 8])
async def test_bad_refused_and_quarantined_records_are_dead_letter_rows_once(
    crash_before_commit: int | None,
) -> None:
    stream = poisoned_stream()
    quality = QualityPlan(rules=(NON_NEGATIVE,), on_failure="continue", after_extract=True)
    plan = make_plan(
        QUERY,
        dlq_type="postgresql",
        dlq_table=DLQ,
        quality=quality,
        max_records_per_trigger=60,
    )
    db = MemoryDatabase(refuse_key=refuse_u3)
    if crash_before_commit is not None:
        db.before_commit[crash_before_commit] = crash
        with pytest.raises(Crash):
            await new_query(plan, MemorySource(fill(stream)), db).run()
    await new_query(plan, MemorySource(fill(stream)), db).run()

    # What the model says: poison is bad, negative values are quarantined, the
    # rest runs through the engine; u3 records that reach the sink are refused.
    poison = {
        (p, o): POISON[r]
        for p, rs in stream.items()
        for o, r in enumerate(rs)
        if isinstance(r, bytes)
    }
    quarantined = {
        (p, o): f"rule non_negative (range): value = {r['value']!r} is below 0"
        for p, rs in stream.items()
        for o, r in enumerate(rs)
        if isinstance(r, dict) and isinstance(r.get("value"), int) and r["value"] < 0
    }
    kept = {
        p: [(o, r) for o, r in enumerate(rs) if (p, o) not in poison and (p, o) not in quarantined]
        for p, rs in stream.items()
    }
    model = expected(QUERY, kept)
    refused = {
        (p, o): "rejected by the sink: value u3 cannot be stored"
        for p, items in kept.items()
        for o, r in items
        if r["user_id"] == "u3" and (p, o) not in model.late and (p, o) not in model.bad
    }
    assert poison and quarantined and refused
    got = dead_letters(db)
    assert set(got) == set(poison) | set(quarantined) | set(refused)
    assert all(got[position].startswith(reason) for position, reason in poison.items())
    assert {position: got[position] for position in quarantined} == quarantined
    assert {position: got[position] for position in refused} == refused

    # Each row names the ledger row of the batch that dead-lettered it.
    ledger = db.ledger_rows(plan.query_name, plan.topic)
    spans = {
        batch_id(plan.query_name, plan.topic, r.partition, r.start_offset, r.next_offset): r
        for r in ledger
    }
    for (_q, _t, p, o), d in db.dead_letter_tables[DLQ].items():
        span = spans[d.batch_id]
        assert span.partition == p and span.start_offset <= o < span.next_offset
        assert d.row.value == fill_value(stream[p][o])
    refused_rows = [d for d in db.dead_letter_tables[DLQ].values() if d.row.error]
    assert {(d.row.partition, d.row.offset) for d in refused_rows} == set(refused)

    # Nothing leaves the accounting: quarantined records are counted as filtered.
    assert all(r.records == r.aggregated + r.late + r.bad + r.filtered for r in ledger)
    assert sum(r.records for r in ledger) == sum(len(rs) for rs in stream.values())
    assert sum(r.filtered for r in ledger) == len(quarantined)
    assert sum(r.bad for r in ledger) == len(poison) + len(refused)
    assert sum(r.dead_lettered for r in ledger) == len(refused)

    without_refused = {
        p: [(o, r) for o, r in items if (p, o) not in refused] for p, items in kept.items()
    }
    assert_tables_equal(table_of(db, plan), expected(QUERY, without_refused).table)


def fill_value(record: Any) -> bytes:
    return record if isinstance(record, bytes) else json.dumps(record).encode()

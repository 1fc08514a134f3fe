"""Bad records: every kind, its one-line reason, and that it changes nothing."""

from __future__ import annotations

from typing import Any

import pytest

from streamproc.engine import AggSpec, Engine, QuerySpec, WindowSpec
from streamproc.state import memory_store_factory

SPEC = QuerySpec(
    group_by=("user",),
    aggregations=(
        AggSpec("n", None, "count"),
        AggSpec("amount_sum", "amount", "sum"),
        AggSpec("price_max", "price", "max"),
        AggSpec("note_first", "note", "first"),
    ),
    output_mode="update",
    event_time_column="event_time",
    delay_ms=0,
    window=WindowSpec(10, 10),
)
GOOD = {"event_time": 5, "user": "u", "amount": 1, "price": 2, "note": "x"}


def with_(**changes: Any) -> dict[str, Any]:
    record = dict(GOOD)
    for name, value in changes.items():
        if value is DROP:
            del record[name]
        else:
            record[name] = value
    return record


DROP = object()

CASES: list[tuple[Any, str]] = [
    (with_(event_time=DROP), "event_time: missing"),
    (with_(event_time=None), "event_time: null"),
    (
        with_(event_time="garbage"),
        "event_time: 'garbage' is not an ISO-8601 time or epoch milliseconds",
    ),
    (
        with_(event_time=True),
        "event_time: True is not an ISO-8601 time or epoch milliseconds",
    ),
    (with_(event_time=10**16), "event_time: 10000000000000000 is outside years 1..9999"),
    (with_(event_time="10000-01-01T00:00:00"), "is not an ISO-8601 time or epoch milliseconds"),
    # A valid time whose window [t - t % 10, +10) would end after year 9999, and the
    # first 10 ms of year 1, whose window would start before it: rows the sink
    # could not store (the window bounds are timestamps there).
    (with_(event_time=253_402_300_799_995), "is too close to the limits of years 1..9999"),
    (with_(event_time="0001-01-01T00:00:00.005Z"), "is too close to the limits of years 1..9999"),
    (with_(amount="abc"), "amount: 'abc' is not a number (needed by amount:sum)"),
    (with_(amount=True), "amount: True is not a number (needed by amount:sum)"),
    (with_(amount=float("nan")), "amount: nan is not a finite number (needed by amount:sum)"),
    (with_(amount=float("-inf")), "amount: -inf is not a finite number (needed by amount:sum)"),
    (with_(amount=1e300), "amount: 1e+300 is out of range (needed by amount:sum)"),
    (with_(amount=[1]), "amount: [1] is not a number (needed by amount:sum)"),
    (with_(price={"a": 1}), "price: {'a': 1} is not a number (needed by price:max)"),
    (with_(price=False), "price: False is not a number (needed by price:max)"),
    (with_(price=float("inf")), "price: inf is not a finite number (needed by price:max)"),
    (with_(note=float("nan")), "note: nan is not a finite number (needed by note:first)"),
    (
        with_(user=[1, 2]),
        "user: [1, 2] is not a valid group-by value (string, number, boolean or null)",
    ),
    (with_(user=float("nan")), "user: nan is not a finite number (group-by)"),
    ("just a string", "record: 'just a string' is not a JSON object"),
    ([1, 2, 3], "record: [1, 2, 3] is not a JSON object"),
    (None, "record: null is not a JSON object"),
]


@pytest.mark.parametrize(("record", "reason"), CASES, ids=[c[1][:40] for c in CASES])
def test_bad_record_reason_and_no_effect(record: Any, reason: str) -> None:
    engine = Engine(SPEC, memory_store_factory, clock=lambda: 0)
    result = engine.process([(0, 0, record)])
    assert result.aggregated == 0 and result.late == ()
    assert len(result.bad) == 1
    bad = result.bad[0]
    assert (bad.partition, bad.offset, bad.value) == (0, 0, record)
    assert reason in bad.reason
    assert "\n" not in bad.reason
    assert engine.partition_max_event_ts_ms(0) is None  # no watermark change
    emission = engine.emit()
    assert emission.rows == () and emission.partials == {0: ()}  # no state


def test_bad_records_in_a_batch_leave_good_ones_alone() -> None:
    # A bad amount on the key's only record must not create the (key, window) state.
    engine = Engine(SPEC, memory_store_factory, clock=lambda: 0)
    result = engine.process(
        [
            (0, 0, with_(user="a", amount="abc")),
            (0, 1, with_(user="b", amount=2.5, event_time=7)),
            (0, 2, with_(user="b", note=None, event_time="1970-01-01T00:00:00.008Z")),
        ]
    )
    assert (result.records, result.aggregated, len(result.bad)) == (3, 2, 1)
    assert [(r.key, r.values) for r in engine.emit().rows] == [(("b",), (2, 3.5, 2, "x"))]


def test_values_only_first_and_last_accept_anything() -> None:
    # note:first takes lists, objects, booleans and null as they are.
    engine = Engine(SPEC, memory_store_factory, clock=lambda: 0)
    result = engine.process([(0, 0, with_(note={"deep": [1, None]}))])
    assert result.bad == ()
    assert engine.emit().rows[0].values[3] == {"deep": [1, None]}


def test_a_missing_or_null_group_column_is_a_valid_group() -> None:
    engine = Engine(SPEC, memory_store_factory, clock=lambda: 0)
    result = engine.process([(0, 0, with_(user=DROP)), (0, 1, with_(user=None))])
    assert result.bad == ()
    assert [(r.key, r.values[0]) for r in engine.emit().rows] == [((None,), 2)]


def test_booleans_are_their_own_groups_and_equal_numbers_are_one() -> None:
    # As JSON and jsonb compare them: true != 1, but 1 == 1.0 and 0 == -0.0 == 0.0.
    engine = Engine(SPEC, memory_store_factory, clock=lambda: 0)
    users = [True, 1, 1.0, 1, True, -0.0, 0.0, 0, False, 1.5, "1", "true"]
    engine.process([(0, i, with_(user=u)) for i, u in enumerate(users)])
    emitted = engine.emit().rows
    got = {(type(r.key[0]).__name__, r.key[0]): r.values[0] for r in emitted}
    assert got == {
        ("bool", True): 2,
        ("int", 1): 3,
        ("int", 0): 3,
        ("bool", False): 1,
        ("float", 1.5): 1,
        ("str", "1"): 1,
        ("str", "true"): 1,
    }

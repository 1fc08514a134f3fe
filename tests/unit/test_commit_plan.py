"""The commit plan: what each output mode writes, decided once, the same for both checkpoints."""

from __future__ import annotations

import pytest

from streamproc.engine import QuerySpec, ResultRow
from streamproc.sinks.base import CommitBatch
from streamproc.sinks.commit_plan import mode_strategy, plan_commit
from tests.plans import spec_of
from tests.reference import Query
from tests.streams import AGGS, MINUTE

ROW = ResultRow(("u",), 0, 10 * MINUTE, (1,) * len(AGGS))


def query(mode: str, *, windowed: bool = True, timeout: bool = False) -> Query:
    return Query(
        ("user_id",),
        AGGS,
        delay_ms=MINUTE if windowed else None,
        size_ms=10 * MINUTE if windowed else None,
        output_mode=mode,
        state_timeout_ms=2 * MINUTE if timeout else None,
    )


def batch(*, local: bool, closes: bool = False) -> CommitBatch:
    return CommitBatch(
        (),
        {0: ()},
        {},
        [ROW] if local else None,
        closes_locally=closes,
        own_rows=None if local else [ROW],
    )


@pytest.mark.parametrize(
    ("mode", "windowed", "local", "rows", "closing"),
    [
        ("update", True, True, "upsert", "evict"),
        ("update", True, False, "merge", "evict"),
        ("update", False, True, "upsert", "none"),
        ("update", False, False, "merge", "none"),
        ("complete", True, True, "upsert", "none"),
        ("complete", True, False, "merge", "none"),
        ("append", True, True, "none", "append"),
        ("append", True, False, "none", "append"),
    ],
)
def test_each_output_mode_plans_its_rows_and_its_closing(
    mode: str, windowed: bool, local: bool, rows: str, closing: str
) -> None:
    spec = spec_of(query(mode, windowed=windowed))
    plan = plan_commit(batch(local=local, closes=local and windowed), spec, mode_strategy(spec))
    assert (plan.rows.kind, plan.closing.kind) == (rows, closing)
    if rows == "merge":
        assert plan.rows.touched == frozenset() and plan.own_rows == [ROW]
    if closing == "append":
        # Closing rows merged by the worker only when it closes windows itself.
        assert (plan.closing.local_rows is not None) == local


def test_a_windowed_state_timeout_expires_given_or_scanned() -> None:
    spec = spec_of(query("update", timeout=True))
    strategy = mode_strategy(spec)
    assert plan_commit(batch(local=True, closes=True), spec, strategy).closing.expiry == "given"
    assert plan_commit(batch(local=False), spec, strategy).closing.expiry == "scan"
    plain = spec_of(query("update"))
    assert plan_commit(batch(local=False), plain, mode_strategy(plain)).closing.expiry == "none"


def test_a_pass_through_query_inserts_its_records_once() -> None:
    spec = QuerySpec((), (), "append", passthrough=True)
    plan = plan_commit(batch(local=True), spec, mode_strategy(spec))
    assert (plan.rows.kind, plan.closing.kind, plan.rows.rows) == ("insert", "none", [ROW])

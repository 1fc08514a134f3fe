"""The commit plan: what each output mode writes, decided once, the same for both checkpoints."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from streamproc.engine import PartialRow, QuerySpec, ResultRow, SessionSpec
from streamproc.sinks.base import CheckpointError, CommitBatch
from streamproc.sinks.commit_plan import distinct, mode_strategy, plan_commit
from streamproc.sinks.session_commit import SessionCommit
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
        assert plan.rows.touched == () and plan.own_rows == [ROW]
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


#: A session batch: a partial session upserted on partition 0, one deleted on
#: partition 1, the row of a session that moved, a session W closed.
GONE = (("v",), 5 * MINUTE, 8 * MINUTE)
CLOSED = (("w",), 0, 3 * MINUTE)


def session_batch(*, local: bool) -> CommitBatch:
    return CommitBatch(
        (),
        {0: (PartialRow(("u",), 0, 10 * MINUTE, (1,) * len(AGGS)),)},
        {1: (GONE,)},
        [ROW] if local else None,
        closes_locally=local,
        sessions=SessionCommit(deleted_rows=(GONE,), closed=(CLOSED,)),
    )


@pytest.mark.parametrize(
    ("mode", "local", "rows", "local_rows", "fences"),
    [
        ("update", True, "replace", None, True),
        ("complete", True, "replace", None, False),
        ("append", True, "none", [ROW], True),
        ("update", False, "sessions", None, True),
        ("complete", False, "sessions", None, True),
        ("append", False, "sessions", None, True),
    ],
)
def test_sessions_replace_rows_when_their_worker_closes_them_else_the_checkpoint_merges(
    mode: str, local: bool, rows: str, local_rows: Any, fences: bool
) -> None:
    spec = replace(
        spec_of(query("update")), output_mode=mode, window=None, session=SessionSpec(MINUTE)
    )
    plan = plan_commit(session_batch(local=local), spec, mode_strategy(spec))
    assert (plan.rows.kind, plan.closing.kind, plan.closes_locally) == (rows, "sessions", local)
    assert plan.closing.local_rows == local_rows and plan.closing.fences == fences
    assert plan.closing.closed == (CLOSED,) and plan.closing.gap_ms == MINUTE
    assert plan.evicted == {1: (GONE,)}
    if rows == "replace":
        assert (plan.rows.rows, plan.rows.deleted) == ([ROW], (GONE,))
    if rows == "sessions":  # every key the batch wrote or deleted a state row of
        assert sorted(plan.rows.touched, key=repr) == [(("u",), None), (("v",), None)]


def test_a_session_batch_without_its_sessions_part_is_refused() -> None:
    spec = replace(spec_of(query("update")), window=None, session=SessionSpec(MINUTE))
    with pytest.raises(CheckpointError, match="without its sessions part"):
        plan_commit(replace(session_batch(local=True), sessions=None), spec, mode_strategy(spec))


def test_touched_keys_are_told_apart_by_their_stored_encoding() -> None:
    # 1 == True in Python: a set of (key, start) would keep one of them.
    pairs = [((1,), 0), ((True,), 0), (("1",), 0), ((1,), 0), ((1,), 10), ((True,), 0)]
    assert distinct(pairs) == (((1,), 0), ((True,), 0), (("1",), 0), ((1,), 10))
    assert [type(k[0]) for k, _ in distinct(pairs)] == [int, bool, str, int]

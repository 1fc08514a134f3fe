"""Session windows per output mode, end to end on the real broker and PostgreSQL (issue 22).

A stream on a 4-partition topic whose message key is not the group key (every user
has records on every partition) runs in two bounded runs: the first half with one
worker (it owns every partition and closes sessions itself), the rest with two
workers sharing the partitions (the checkpoint merges the partial sessions of every
partition and closes them by W). The table must equal the independent model's
(tests/reference_sessions.py) row by row, and never hold two overlapping sessions of
a user (update, complete).
"""

from __future__ import annotations

import dataclasses
import zlib
from pathlib import Path
from typing import Any

import pytest

from streamproc.engine import SessionSpec
from streamproc.local import create_topic
from tests.integration.pipeline_helpers import make_plan, run_workers
from tests.kafka_io import produce
from tests.reference import Query, assert_tables_equal
from tests.reference_sessions import assert_no_overlap, expected_sessions, one_phase
from tests.results import read_table
from tests.streams import AGGS, MINUTE, halves, make_stream

GAP_MS = 2 * MINUTE
#: 3,000 records 2 s apart over 40 users: about 80 s between a user's records.
RECORDS, USERS = 3_000, 40


def query(mode: str) -> Query:
    return Query(("user_id",), AGGS, delay_ms=5 * MINUTE, output_mode=mode)


@pytest.mark.parametrize("mode", ["update", "complete", "append"])
async def test_sessions_per_output_mode_match_the_reference(
    mode: str, kafka_bootstrap: str, pg_dsn: str, pg: Any, unique_name: str, tmp_path: Path
) -> None:
    stream = make_stream(RECORDS, seed=zlib.crc32(mode.encode()) % 1000, users=USERS)
    first, rest = halves(stream)
    await create_topic(kafka_bootstrap, unique_name, 4)
    plan = make_plan(
        name=unique_name, bootstrap=kafka_bootstrap, dsn=pg_dsn, tmp=tmp_path, query=query("update")
    )
    spec = dataclasses.replace(plan.spec, output_mode=mode, session=SessionSpec(GAP_MS))
    plan = dataclasses.replace(plan, spec=spec)

    await produce(kafka_bootstrap, unique_name, first)
    stats = await run_workers(plan)
    await produce(kafka_bootstrap, unique_name, rest)
    stats += await run_workers(plan, workers=2)

    model = expected_sessions(query(mode), GAP_MS, sorted(stream), one_phase(stream))
    table = await read_table(pg, unique_name, query(mode), sessions=True)
    assert_tables_equal(table, model.table)
    assert len(table) == len(model.table) > 50
    assert sum(s.records for s in stats) == RECORDS
    assert sum(s.late for s in stats) == len(model.late) > 0
    if mode != "append":
        assert_no_overlap(table)
    states = await pg.fetchval(
        "SELECT count(*) FROM streamproc_state WHERE query = $1 AND partition >= 0", unique_name
    )
    if mode == "complete":
        assert states >= len(table)  # every session stays in state
    else:  # what W has not closed yet
        assert states < len(table)

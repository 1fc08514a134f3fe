"""Exact checks of the ledger, and waiting on a query's progress in it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tests.faults.harness.workers import Worker
from tests.results import ledger_records
from tests.waiting import wait_until


@dataclass(frozen=True)
class LedgerSummary:
    """What the ledger of one query says, summed."""

    rows: int
    records: int
    aggregated: int
    late: int
    bad: int
    filtered: int
    dead_lettered: int


async def check_ledger(
    pg: Any, query: str, topic: str, produced: Mapping[int, int]
) -> LedgerSummary:
    """Assert that the ledger holds every offset once: contiguous spans, no overlap, no gap.

    Per partition the spans start at 0, each starts where the previous ended,
    the last ends at the partition's record count; every span's records equal
    its length (the topic has no offset gaps) and are fully accounted for
    (records = aggregated + late + bad + filtered); batch ids are unique.

    Args:
        pg: An asyncpg connection.
        query: The query name.
        topic: Its source topic.
        produced: How many records each partition holds.

    Returns:
        The ledger's sums.
    """
    rows = await pg.fetch(
        """SELECT partition, start_offset, next_offset, batch_id, records, aggregated, late,
                  bad, filtered, dead_lettered
           FROM streamproc_ledger WHERE query = $1 AND topic = $2
           ORDER BY partition, start_offset""",
        query,
        topic,
    )
    by_partition: dict[int, list[Any]] = {}
    for r in rows:
        by_partition.setdefault(r["partition"], []).append(r)
    expected_parts = {p for p, n in produced.items() if n}
    assert set(by_partition) == expected_parts, (sorted(by_partition), sorted(expected_parts))
    for p, spans in by_partition.items():
        position = 0
        for r in spans:
            assert r["start_offset"] == position, f"partition {p}: gap/overlap at {dict(r)}"
            assert r["next_offset"] > r["start_offset"], dict(r)
            assert r["records"] == r["next_offset"] - r["start_offset"], dict(r)
            assert r["records"] == r["aggregated"] + r["late"] + r["bad"] + r["filtered"], dict(r)
            assert 0 <= r["dead_lettered"] <= r["bad"], dict(r)
            position = r["next_offset"]
        assert position == produced[p], f"partition {p}: ledger ends at {position}"
    assert len({r["batch_id"] for r in rows}) == len(rows), "a batch id appears twice"
    total = sum(r["records"] for r in rows)
    assert total == sum(produced.values())
    return LedgerSummary(
        rows=len(rows),
        records=total,
        aggregated=sum(r["aggregated"] for r in rows),
        late=sum(r["late"] for r in rows),
        bad=sum(r["bad"] for r in rows),
        filtered=sum(r["filtered"] for r in rows),
        dead_lettered=sum(r["dead_lettered"] for r in rows),
    )


async def wait_for_progress(
    pg: Any, query: str, at_least: int, workers: Sequence[Worker] = (), timeout: float = 120.0
) -> int:
    """Wait until the ledger of query counts at least so many records (workers stay alive).

    Args:
        pg: An asyncpg connection.
        query: The query name.
        at_least: The number of records to wait for.
        workers: Workers that must stay alive meanwhile.
        timeout: Seconds before the wait fails.

    Returns:
        The records the ledger counts.
    """

    counts = [0]

    async def reached() -> bool:
        counts.append(await ledger_records(pg, query))
        if counts[-1] >= at_least:
            return True
        for w in workers:
            w.assert_alive()
        return False

    try:
        await wait_until(reached, f"{at_least} records in the ledger", timeout, 0.2)
    except AssertionError as exc:
        raise AssertionError(f"{exc} (only {counts[-1]})") from None
    return counts[-1]


async def wait_for_records(
    pg: Any, query: str, target: int, workers: Sequence[Worker] = (), timeout: float = 240.0
) -> None:
    """Wait until the ledger counts exactly the target (all produced) records."""
    n = await wait_for_progress(pg, query, target, workers, timeout)
    assert n == target, f"ledger counts {n} records, {target} produced"

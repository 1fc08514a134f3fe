"""Leaving a consumer group: where aiokafka needs help (`KafkaSource.stop`).

Both reach into aiokafka's consumer (its coordinator, fetcher and client), within
the versions pyproject.toml allows; tests/integration/test_cli_run.py covers both.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any


async def close_abandoned(consumer: Any) -> None:
    """Close what a `stop()` cut short by its timeout left running, without leaving the group.

    aiokafka's stop() closes the coordinator, then the fetcher, then the client; cut
    short in the coordinator, it left the fetcher's task running, and when the loop
    closed asyncio logged `ERROR Task was destroyed but it is pending!
    ... Fetcher._fetch_requests_routine()` after a run that succeeded. Each task is
    cancelled and awaited here, the fetcher's by its own close().
    """
    coordinator = getattr(consumer, "_coordinator", None)
    if coordinator is not None:
        task = coordinator._coordination_task
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await coordinator._stop_heartbeat_task()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await coordinator._stop_commit_offsets_refresh_task()
    fetcher = getattr(consumer, "_fetcher", None)
    if fetcher is not None:
        with contextlib.suppress(Exception):
            await fetcher.close()
    await consumer._client.close()


def leave_group_even_in_generation_zero(consumer: Any) -> None:
    """Make aiokafka send LeaveGroup when the group's generation is 0.

    aiokafka only leaves a group whose generation is > 0 (Apache Kafka numbers
    generations from 1). The local broker numbers a group's first generation
    0, so without this a stopped member stays in the group until its session
    times out, and the next worker waits that long for its partitions.
    """
    coordinator = getattr(consumer, "_coordinator", None)
    if coordinator is not None and getattr(coordinator, "generation", None) == 0:
        coordinator.generation = 1

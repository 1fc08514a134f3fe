"""Reading what a topic's partitions hold, from a consumer outside the group.

`describe_partitions` gives each partition's log start, its exact end and the
record at an asked offset, without moving a group member's positions: restores
check the checkpoint against it, and bounded runs take their end offsets from it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from aiokafka import TopicPartition
from aiokafka.errors import OffsetOutOfRangeError

from streamproc.sources.base import PartitionInfo, RawRecord


async def describe_partitions(
    probe: Any, topic: str, offsets: Mapping[int, int | None]
) -> dict[int, PartitionInfo]:
    """Log start, exact end, and the record at an offset, per partition.

    The end is the fetch response's high watermark (ListOffsets can undercount on
    the local broker: OPERATING.md, "The local stack"): each partition is fetched
    once, at the asked offset or just below the listed end.

    Args:
        probe: A started consumer outside the group, with `auto_offset_reset` none.
        topic: The topic.
        offsets: Per partition, the offset whose record is wanted (None: none).
    """
    tps = {p: TopicPartition(topic, p) for p in offsets}
    if not tps:
        return {}
    probe.assign(list(tps.values()))
    starts = await probe.beginning_offsets(list(tps.values()))
    listed = await probe.end_offsets(list(tps.values()))
    wanted: dict[int, int | None] = {}
    for p, tp in tps.items():
        want = offsets[p]
        if want is not None and want < starts[tp]:
            want = None  # deleted already: no record to read
        wanted[p] = want
        probe.seek(tp, want if want is not None else max(starts[tp], listed[tp] - 1))
    found: dict[int, RawRecord | None] = {}
    ends: dict[int, int] = {}
    deadline = asyncio.get_running_loop().time() + 10
    while len(ends) < len(tps):
        if asyncio.get_running_loop().time() > deadline:
            missing = sorted(set(tps) - set(ends))
            raise TimeoutError(f"no fetch response for partitions {missing} of {topic}")
        todo = [tps[p] for p in tps if p not in ends]
        try:
            batches = await probe.getmany(*todo, timeout_ms=200, max_records=1)
        except OffsetOutOfRangeError as exc:
            # The asked offset is past the end: read the end instead.
            for tp in exc.args[0] if exc.args and isinstance(exc.args[0], dict) else todo:
                wanted[tp.partition] = None
                probe.seek(tp, max(starts[tp], listed[tp] - 1))
            continue
        for tp, records in batches.items():
            want = wanted[tp.partition]
            if records and want is not None and tp.partition not in found:
                r = records[0]
                found[tp.partition] = (
                    RawRecord(tp.partition, r.offset, r.key, r.value, r.timestamp)
                    if r.offset == want
                    else None
                )
        for p, tp in tps.items():
            high = probe.highwater(tp)
            if p in ends or high is None:
                continue
            want = wanted[p]
            if want is None or p in found or high <= want:
                ends[p] = high
                probe.pause(tp)
    probe.resume(*tps.values())
    return {p: PartitionInfo(starts[tps[p]], ends[p], found.get(p)) for p in tps}

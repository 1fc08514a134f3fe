"""Produce example records for a pipeline config: ``python -m streamproc.demo.produce CONFIG``.

The records have the fields the config reads (group-by, event time, aggregated
columns), event time running faster than wall time so that windows close while one
watches, and about 1% late. The command first creates the config's topics (the
source with ``--partitions``, and the late and dead-letter topics it names), then,
when the source starts at 'latest', waits for a worker of the query to join its
consumer group (records produced before would not be read), then produces for
``--seconds`` at ``--rate`` records per second.

Exit status: 0 produced; 1 one ``streamproc:`` line (an invalid config, no worker
joined in time, the broker unreachable); 2 a usage error.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import sys
import time
from collections.abc import Sequence

from streamproc.config import ConfigError, PipelineConfig, load_config
from streamproc.demo.events import config_records, iso_ms, stream_spec_for

# Time for a worker that just got its partitions to restore them and look up its
# start offsets ('latest') before the first record arrives; records produced before
# that are not read (that is what 'latest' means). 2 s was too short on a busy
# 2-core machine (the worker missed the first 1.6 s of records).
_SETTLE_S = 5.0


def topics_of(cfg: PipelineConfig, partitions: int) -> dict[str, int]:
    """The topics the config reads and writes, with their partition counts."""
    topics = {cfg.extract.topic or "": partitions}
    late = cfg.streaming.late_data if cfg.streaming else None
    if late is not None and late.strategy == "sendtodlq" and late.dlq_topic:
        topics[late.dlq_topic] = 1
    dlq = cfg.error_handling.dlq
    if dlq.dlq_type == "kafka" and dlq.topic:
        topics[dlq.topic] = 1
    if cfg.load.sink_type == "kafka" and cfg.load.topic:
        topics[cfg.load.topic] = partitions
    return topics


async def _wait_for_worker(bootstrap: str, group: str, timeout_s: float) -> bool:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            response = await admin.describe_consumer_groups([group])
            _, _, state, _, _, members = response[0].groups[0]
            if state == "Stable" and members:
                return True
            await asyncio.sleep(0.5)
        return False
    finally:
        await admin.close()


async def _produce(cfg: PipelineConfig, args: argparse.Namespace) -> int:
    from aiokafka import AIOKafkaProducer

    from streamproc.local import create_topic

    bootstrap = cfg.extract.bootstrap_servers or "localhost:9092"
    for topic, partitions in topics_of(cfg, args.partitions).items():
        await create_topic(bootstrap, topic, partitions)
    topic = cfg.extract.topic or ""
    query = cfg.streaming.query_name if cfg.streaming else None
    if cfg.extract.starting_offsets == "latest" and query and not args.no_wait:
        group = f"streamproc-{query}"
        _say(f"topics ready; waiting for a worker of {query} (start: streamproc run CONFIG) ...")
        if not await _wait_for_worker(bootstrap, group, args.wait):
            return _fail(f"no worker joined consumer group {group} within {args.wait:.0f} s")
        await asyncio.sleep(_SETTLE_S)
    count = int(args.seconds * args.rate)
    spec = stream_spec_for(cfg, args.seconds, count)
    if args.realtime:
        # Event time is wall time: a generator restarted later goes on from its own now.
        spec = dataclasses.replace(spec, span_ms=int(args.seconds * 1000))
        start_ms = int(time.time() * 1000)
    else:
        start_ms = int(time.time() * 1000) - spec.span_ms  # event time up to now
    key_column = spec.group_by[0] if spec.group_by else None
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20)
    await producer.start()
    started, sent = time.monotonic(), 0
    try:
        for record in config_records(spec, start_ms, count):
            key = str(record[key_column]).encode() if key_column else None
            await producer.send(topic, json.dumps(record).encode(), key=key)
            sent += 1
            if sent % max(args.rate // 10, 1) == 0:  # pace in tenths of a second
                await producer.flush()
                ahead = sent / args.rate - (time.monotonic() - started)
                if ahead > 0:
                    await asyncio.sleep(ahead)
        await producer.flush()
    finally:
        await producer.stop()
    end_ms = start_ms + spec.span_ms
    _say(
        f"produced {sent} record(s) to {topic} over {time.monotonic() - started:.0f} s, "
        f"event time {iso_ms(start_ms)} to {iso_ms(end_ms)} (about 1% late)"
    )
    return 0


def _say(text: str) -> None:
    print(text, flush=True)


def _fail(text: str) -> int:
    print(f"streamproc: {text}", file=sys.stderr, flush=True)
    return 1


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m streamproc.demo.produce",
        description="Produce example records for a pipeline config's source topic.",
        epilog="exit status: 0 produced; 1 one streamproc: line; 2 a usage error",
    )
    parser.add_argument("config", help="a pipeline config, e.g. configs/user-analytics.json")
    parser.add_argument("--seconds", type=float, default=30.0, help="how long (default 30)")
    parser.add_argument("--rate", type=int, default=200, help="records per second (default 200)")
    parser.add_argument("--partitions", type=int, default=4, help="of a new topic (default 4)")
    parser.add_argument(
        "--wait", type=float, default=120.0, help="seconds to wait for a worker (default 120)"
    )
    parser.add_argument(
        "--no-wait", action="store_true", help="produce at once, without waiting for a worker"
    )
    parser.add_argument(
        "--realtime",
        action="store_true",
        help="event time runs with the wall clock from now (a long-running generator; "
        "default: event time covers three windows plus delays by the end of the run)",
    )
    args = parser.parse_args(argv)
    if args.seconds <= 0 or args.rate <= 0 or args.partitions <= 0:
        parser.error("--seconds, --rate and --partitions must be above zero")
    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        for line in exc.errors:
            _fail(f"{args.config}: {line}")
        return 1
    if cfg.extract.source_type != "kafka":
        return _fail(f"{args.config}: extract.sourceType is not kafka; nothing to produce to")
    from aiokafka.errors import KafkaError

    try:
        return asyncio.run(_produce(cfg, args))
    except (OSError, RuntimeError, KafkaError) as exc:
        return _fail(f"cannot produce to {cfg.extract.bootstrap_servers}: {exc}")
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

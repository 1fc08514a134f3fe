"""Shared machinery of the fault tests: configs, worker processes, exact checks.

Workers run as real subprocesses (``python -m tests.faults.worker CONFIG``), so
a kill -9 is a real one. Every check here is exact: the ledger must be
contiguous per partition and count every produced record once, and tables are
compared row by row.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import json
import os
import random
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from streamproc.config import load_config
from streamproc.runtime.main import store_factory_for
from streamproc.runtime.planning import plan_from_config
from streamproc.runtime.query import RunStats, StreamingQuery
from streamproc.sinks.layout import quote_ident
from streamproc.sinks.rows import datetime_to_ms, decode_key, decode_state
from tests.integration.expected import Query, parse_ts
from tests.integration.pipeline_helpers import AGGS, MINUTE

REPO = Path(__file__).resolve().parents[2]

# The query of the fault tests: every aggregate, sliding windows, a 5 min delay.
AGG_TEXT = "count=*:count," + ",".join(f"value:{f}" for _, c, f in AGGS if c)
SIZE_MS, SLIDE_MS, DELAY_MS = 10 * MINUTE, 5 * MINUTE, 5 * MINUTE


def fault_query(output_mode: str = "update", group_by: tuple[str, ...] = ("user_id",)) -> Query:
    """The expected.py model of the query `write_config` writes."""
    return Query(
        group_by,
        AGGS,
        delay_ms=DELAY_MS,
        size_ms=SIZE_MS,
        slide_ms=SLIDE_MS,
        output_mode=output_mode,
    )


# ----------------------------------------------------------------------------- configs


@dataclass
class Pipeline:
    """One streaming pipeline config; `write` renders it as a config file."""

    name: str
    topic: str
    table: str
    bootstrap: str
    dsn: str
    checkpoint: Path
    trigger: str = "processingtime=500 milliseconds"
    max_records: int = 2_000
    output_mode: str = "update"
    group_by: str = "user_id"
    late: dict[str, str] = field(default_factory=lambda: {"strategy": "drop"})
    dlq: dict[str, str] = field(default_factory=lambda: {"dlqType": "logging"})
    retry: dict[str, Any] = field(
        default_factory=lambda: {
            "strategy": "fixed",
            "maxAttempts": 2,
            "initialDelaySeconds": 0.5,
            "jitter": False,
        }
    )
    breaker: dict[str, Any] = field(
        default_factory=lambda: {"failureThreshold": 3, "resetTimeoutSeconds": 3}
    )
    fail_fast: bool = False

    def document(self) -> dict[str, Any]:
        """The config as JSON."""
        return {
            "pipelineId": self.name,
            "mode": "streaming",
            "extract": {
                "sourceType": "kafka",
                "connectionParams": {
                    "kafka.bootstrap.servers": self.bootstrap,
                    "subscribe": self.topic,
                    "startingOffsets": "earliest",
                },
            },
            "transforms": [
                {
                    "transformType": "aggregation",
                    "parameters": {
                        "groupByColumns": self.group_by,
                        "windowColumn": "event_time",
                        "windowDuration": "10 minutes",
                        "slideDuration": "5 minutes",
                        "aggregations": AGG_TEXT,
                    },
                }
            ],
            "load": {
                "sinkType": "postgresql",
                "table": self.table,
                "connectionParams": {"url": self.dsn},
            },
            "streamingConfigJson": {
                "checkpointLocation": str(self.checkpoint),
                "queryName": self.name,
                "outputMode": self.output_mode,
                "triggerMode": self.trigger,
                "maxRecordsPerTrigger": self.max_records,
                "watermark": {"eventTimeColumn": "event_time", "delayThreshold": "5 minutes"},
                "lateDataConfig": self.late,
            },
            "errorHandlingConfig": {
                "retryConfig": self.retry,
                "circuitBreakerConfig": self.breaker,
                "dlqConfig": self.dlq,
                "failFast": self.fail_fast,
            },
        }

    def write(self, directory: Path, suffix: str = "") -> Path:
        """Write the config file and return its path."""
        path = directory / f"{self.name}{suffix}.json"
        path.write_text(json.dumps(self.document(), indent=2))
        return path


# ----------------------------------------------------------------------------- workers


def _die_with_parent() -> None:
    # A worker must not outlive pytest, even when pytest is killed with -9.
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG


class Worker:
    """One worker process: ``python -m tests.faults.worker CONFIG``, output to a log file."""

    def __init__(
        self,
        config: Path,
        log_path: Path,
        env: Mapping[str, str] | None = None,
        session_timeout_ms: int | None = None,
    ) -> None:
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.started = time.monotonic()
        extra = [str(session_timeout_ms)] if session_timeout_ms else []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.faults.worker", str(config), *extra],
            cwd=REPO,
            env={**os.environ, **(env or {})},
            stdout=self._log,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def text(self) -> str:
        """Everything the worker logged so far."""
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None

    async def wait_for(self, needle: str, timeout: float = 60.0) -> None:
        """Wait until the log contains needle (fails if the worker exits first)."""
        deadline = time.monotonic() + timeout
        while needle not in self.text():
            assert self.alive(), f"worker {self.pid} exited:\n{self.text()[-3000:]}"
            assert time.monotonic() < deadline, f"no {needle!r} in:\n{self.text()[-3000:]}"
            await asyncio.sleep(0.05)

    def kill9(self) -> None:
        """SIGKILL: no cleanup of any kind in the worker."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    async def finish(self, timeout: float = 120.0) -> int:
        """Wait for the worker to exit by itself; its exit code."""
        deadline = time.monotonic() + timeout
        while self.alive():
            assert time.monotonic() < deadline, f"worker still running:\n{self.text()[-3000:]}"
            await asyncio.sleep(0.1)
        return int(self.proc.returncode)

    async def terminate(self, timeout: float = 60.0) -> int:
        """SIGTERM (commit the batch in flight, then exit); its exit code."""
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGTERM)
        return await self.finish(timeout)

    def stop(self) -> None:
        """Make sure the process is gone (for finally blocks)."""
        if self.alive():
            self.kill9()
        self._log.close()


# ----------------------------------------------------------------------------- Kafka


async def produce_raw(
    bootstrap: str,
    topic: str,
    messages: Sequence[tuple[int, bytes | None, bytes | None]],
) -> None:
    """Produce (partition, key, value) in order; values up to a few MB."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        linger_ms=5,
        enable_idempotence=False,
        max_request_size=4 * 1_048_576,
    )
    await producer.start()
    try:
        futures = [
            await producer.send(topic, value, key=key, partition=p) for p, key, value in messages
        ]
        for f in futures:
            await f
    finally:
        await producer.stop()


def encode_stream(
    stream: Mapping[int, Sequence[dict[str, Any]]],
) -> list[tuple[int, bytes | None, bytes | None]]:
    """JSON records as messages keyed by something that is not the group key."""
    return [
        (p, f"msg-{rec.get('seq', i)}".encode(), json.dumps(rec).encode())
        for p, records in stream.items()
        for i, rec in enumerate(records)
    ]


@dataclass(frozen=True)
class DeadLetter:
    """A message read back from a dead-letter topic."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: dict[str, str]

    @property
    def source(self) -> tuple[int, int]:
        return int(self.headers["source_partition"]), int(self.headers["source_offset"])


async def read_topic(bootstrap: str, topic: str, quiet_s: float = 2.0) -> list[DeadLetter]:
    """Every message of a topic: read until every partition reached its high watermark."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=16 * 1_048_576,
        fetch_max_bytes=64 * 1_048_576,
    )
    await consumer.start()
    out: list[DeadLetter] = []
    try:
        parts = consumer.partitions_for_topic(topic) or set()
        if not parts:
            await consumer._client.force_metadata_update()
            parts = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        deadline = time.monotonic() + 60
        last_data = time.monotonic()
        while time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=300)
            for tp, records in batches.items():
                for r in records:
                    headers = {k: v.decode("utf-8", "replace") for k, v in r.headers}
                    out.append(DeadLetter(tp.partition, r.offset, r.key, r.value, headers))
            if batches:
                last_data = time.monotonic()
            done = True
            for tp in tps:
                high = consumer.highwater(tp)
                done = done and high is not None and await consumer.position(tp) >= high
            if done and time.monotonic() - last_data >= quiet_s:
                break
    finally:
        await consumer.stop()
    return out


# ----------------------------------------------------------------------------- ledger


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


async def ledger_records(pg: Any, query: str) -> int:
    """Records committed so far by a query (its progress)."""
    if not await pg.fetchval("SELECT to_regclass('streamproc_ledger') IS NOT NULL"):
        return 0  # no worker has started yet
    n = await pg.fetchval(
        "SELECT coalesce(sum(records), 0) FROM streamproc_ledger WHERE query = $1", query
    )
    return int(n)


async def check_ledger(
    pg: Any, query: str, topic: str, produced: Mapping[int, int]
) -> LedgerSummary:
    """Assert that the ledger holds every offset once: contiguous spans, no overlap, no gap.

    Per partition the spans start at 0, each starts where the previous ended,
    the last ends at the partition's record count; every span's records equal
    its length (the topic has no offset gaps) and are fully accounted for
    (records = aggregated + late + bad + filtered); batch ids are unique.
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
    """Wait until the ledger of query counts at least so many records (workers stay alive)."""
    deadline = time.monotonic() + timeout
    while True:
        n = await ledger_records(pg, query)
        if n >= at_least:
            return n
        for w in workers:
            assert w.alive(), f"worker {w.pid} exited:\n{w.text()[-3000:]}"
        assert time.monotonic() < deadline, f"only {n} of {at_least} records after {timeout}s"
        await asyncio.sleep(0.2)


async def wait_for_records(
    pg: Any, query: str, target: int, workers: Sequence[Worker] = (), timeout: float = 240.0
) -> None:
    """Wait until the ledger counts exactly the target (all produced) records."""
    n = await wait_for_progress(pg, query, target, workers, timeout)
    assert n == target, f"ledger counts {n} records, {target} produced"


async def wait_until(condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    """Wait until condition() holds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not in {timeout}s: {what}"
        await asyncio.sleep(0.1)


# ----------------------------------------------------------------------------- tables


async def read_partials(pg: Any, query: str) -> dict[tuple[Any, ...], Any]:
    """The query's partial states as {(partition, key, window): state} (the working state)."""
    rows = await pg.fetch(
        """SELECT partition, key, window_start_ms, window_end_ms, state
           FROM streamproc_state WHERE query = $1""",
        query,
    )
    return {
        (r["partition"], decode_key(r["key"]), r["window_start_ms"], r["window_end_ms"]): (
            decode_state(r["state"])
        )
        for r in rows
    }


async def read_late_table(pg: Any, table: str, query: str) -> dict[tuple[int, int], Any]:
    """A separatestream table as {(partition, offset): (event ms, watermark ms, reason, record)}."""
    rows = await pg.fetch(
        f"""SELECT source_partition, source_offset, event_time, watermark, reason,
                   record::text AS record
            FROM {quote_ident(table)} WHERE query = $1""",
        query,
    )
    return {
        (r["source_partition"], r["source_offset"]): (
            datetime_to_ms(r["event_time"]),
            datetime_to_ms(r["watermark"]),
            r["reason"],
            json.loads(r["record"]),
        )
        for r in rows
    }


def expected_late(
    partitions: Mapping[int, Sequence[tuple[int, dict[str, Any]]]], delay_ms: int
) -> dict[tuple[int, int], Any]:
    """DESIGN.md's lateness, restated: late when older than max(earlier in p) - delay."""
    out: dict[tuple[int, int], Any] = {}
    for p, records in partitions.items():
        max_ts: int | None = None
        for offset, rec in records:
            ts = parse_ts(rec["event_time"])
            if max_ts is not None and ts < max_ts - delay_ms:
                out[(p, offset)] = (ts, max_ts - delay_ms, "event time older than watermark", rec)
                continue
            max_ts = ts if max_ts is None else max(max_ts, ts)
    return out


async def clean_run(config: Path, **changes: str) -> RunStats:
    """Run a config's query once, in this process, availablenow, with renamed outputs.

    The reference every fault run is compared with: one worker, no fault.
    """
    document = json.loads(config.read_text())
    streaming = document["streamingConfigJson"]
    streaming["triggerMode"] = "availablenow"
    streaming["queryName"] = changes["query"]
    document["pipelineId"] = changes["query"]
    document["load"]["table"] = changes["table"]
    if "late_table" in changes:
        streaming["lateDataConfig"]["lateDataTable"] = changes["late_table"]
    path = config.with_name(f"{changes['query']}.json")
    path.write_text(json.dumps(document))
    plan = plan_from_config(load_config(str(path)))
    query = StreamingQuery(plan, store_factory_for(plan, "memory"))
    return await asyncio.wait_for(query.run(), 300)


def scrape(port: int, metric: str, predicate: Callable[[str], bool] = lambda line: True) -> float:
    """The value of a metric line on a worker's /metrics, or NaN when absent."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    for line in text.splitlines():
        if line.startswith(metric + "{") and predicate(line):
            return float(line.rsplit(" ", 1)[1])
    return float("nan")


# ----------------------------------------------------------------------------- poison


@dataclass(frozen=True)
class Poison:
    """A record no pipeline may choke on, and what the DLQ must say about it."""

    kind: str
    value: bytes | None
    reason: str  # a part of the DLQ `reason` header
    rejected_by_sink: bool = False  # valid for the engine, refused by PostgreSQL


def _json(record: dict[str, Any]) -> bytes:
    return json.dumps(record).encode()


def poison_records() -> list[Poison]:
    """Twenty-eight kinds of poison for the fault query (group by user_id, numbers in value).

    Where a poison has a valid event time it is EVENT_TIME, which `with_poison`
    replaces with the latest time of its partition so far: on time, so that
    the engine does not set it aside as late before the sink sees it.
    """
    ok = {"user_id": "u1", "event_time": EVENT_TIME, "value": 1}

    def with_(**changes: Any) -> bytes:
        record = {**ok, **changes}
        return _json({k: v for k, v in record.items() if v is not _DROP})

    noise = random_text(1_000_000)  # incompressible: its index entry cannot shrink
    return [
        Poison("invalid UTF-8", b'{"user_id": "u1", "x": "\xff\xfe"}', "not UTF-8"),
        Poison("not JSON", b'{"user_id": "u1", "event_time": ', "not JSON"),
        Poison("empty value", b"", "not JSON"),
        Poison("tombstone", None, "null (a tombstone)"),
        Poison("JSON array", b"[1, 2, 3]", "a JSON array, not an object"),
        Poison("JSON number", b"42", "a JSON number, not an object"),
        Poison("JSON null", b"null", "a JSON null, not an object"),
        Poison("JSON string", b'"hello"', "a JSON string, not an object"),
        Poison("JSON boolean", b"true", "a JSON boolean, not an object"),
        Poison("no event time", with_(event_time=_DROP), "event_time: missing"),
        Poison("null event time", with_(event_time=None), "event_time: null"),
        Poison("garbage event time", with_(event_time="yesterday"), "is not an ISO-8601"),
        Poison("object event time", with_(event_time={"$date": 1}), "is not an ISO-8601"),
        Poison("event time past 9999", with_(event_time=10**16), "outside years 1..9999"),
        Poison("event time at the edge", with_(event_time="9999-12-31T23:59:00Z"), "too close"),
        Poison("NaN event time", b'{"user_id": "u1", "event_time": NaN}', "is not an ISO-8601"),
        Poison("overflowing value", with_(value=_RAW_1E400), "is not a finite number"),
        Poison("value out of range", with_(value=1e300), "is out of range"),
        Poison("NaN value", with_(value=_RAW_NAN), "is not a finite number"),
        Poison("numeric column holds a string", with_(value="12"), "is not a number"),
        Poison("numeric column holds an object", with_(value={"a": 1}), "is not a number"),
        Poison(
            "SQL in a numeric column",
            with_(value="0); DROP TABLE streamproc_ledger; --"),
            "is not a number",
        ),
        Poison(
            "SQL and quotes in keys and the event time",
            _json(
                {
                    "'; DROP TABLE streamproc_ledger; --": '"',
                    'a"b\\': "'; DELETE FROM streamproc_partials; --",
                    "user_id": "u1",
                    "event_time": "'; DELETE FROM streamproc_ledger; --",
                }
            ),
            "is not an ISO-8601",
        ),
        Poison("group value an object", with_(user_id={"a": 1}), "not a valid group-by value"),
        Poison("deeply nested JSON", b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
        # Valid for the engine, refused by PostgreSQL: isolated and dead-lettered.
        Poison("NUL in the group key", with_(user_id="u\u0000x"), _REJECTED, True),
        Poison("lone surrogate in the group key", with_(user_id="\ud800"), _REJECTED, True),
        Poison("1 MB group key", with_(user_id=noise), _REJECTED, True),
    ]


EVENT_TIME = "__EVENT_TIME__"
_DROP = object()
_REJECTED = "rejected by the sink: "
# json.dumps cannot write these; the markers are replaced in the bytes.
_RAW_1E400 = "__1e400__"
_RAW_NAN = "__NaN__"


def random_text(n: int, seed: int = 7) -> str:
    rng = random.Random(seed)
    return "".join(rng.choices("abcdefghijklmnopqrstuvwxyz0123456789", k=n))


def fill_markers(value: bytes | None, event_time: str) -> bytes | None:
    """Put in the event time, and the JSON json.dumps refuses to write (1e400, NaN)."""
    if value is None:
        return None
    value = value.replace(b'"__1e400__"', b"1e400").replace(b'"__NaN__"', b"NaN")
    return value.replace(EVENT_TIME.encode(), event_time.encode())


def with_poison(
    stream: Mapping[int, Sequence[dict[str, Any]]], poisons: Sequence[Poison], seed: int = 5
) -> tuple[list[tuple[int, bytes | None, bytes | None]], dict[tuple[int, int], Poison]]:
    """Every poison once in every partition, at random places among the good records.

    Returns the messages to produce and where each poison will land (partition, offset).
    """
    rng = random.Random(seed)
    messages: list[tuple[int, bytes | None, bytes | None]] = []
    where: dict[tuple[int, int], Poison] = {}
    for p, records in stream.items():
        slots = sorted(rng.sample(range(len(records) + len(poisons)), len(poisons)))
        order = list(poisons)
        rng.shuffle(order)
        good = iter(records)
        queue = iter(order)
        latest = records[0]["event_time"]
        for offset in range(len(records) + len(poisons)):
            if slots and offset == slots[0]:
                slots.pop(0)
                poison = next(queue)
                where[(p, offset)] = poison
                value = fill_markers(poison.value, latest)
                messages.append((p, f"poison-{p}-{offset}".encode(), value))
            else:
                rec = next(good)
                latest = max(latest, rec["event_time"], key=parse_ts)
                messages.append((p, f"msg-{rec['seq']}".encode(), json.dumps(rec).encode()))
    return messages, where


def good_records(
    stream: Mapping[int, Sequence[dict[str, Any]]], where: Mapping[tuple[int, int], Poison]
) -> dict[int, list[tuple[int, dict[str, Any]]]]:
    """The good records with their offsets in the poisoned topic (for the model)."""
    out: dict[int, list[tuple[int, dict[str, Any]]]] = {}
    for p, records in stream.items():
        good = iter(records)
        n = len(records) + sum(1 for q, _ in where if q == p)
        out[p] = [(o, next(good)) for o in range(n) if (p, o) not in where]
    return out

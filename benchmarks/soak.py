"""Memory soak: does a long-running worker's RSS stay flat? (`python -m benchmarks.soak`)

The load of issue 9: a processingtime query (update mode, tumbling 10 s,
2,000 keys, event time = wall time, ~1% late records to a side table), fed
3,000 records/s by a producer, for --minutes (default 30). The worker runs as
`streamproc run`, a separate process; its RSS is sampled every 10 s. Printed:
the curve (one line a minute) and the slope over the last third of the run
(least squares, MiB per minute). At the end the worker is stopped with
SIGTERM and the ledger must count every record produced, exactly.

Not a test: it takes half an hour. Results: benchmarks/results/soak.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import asyncpg
from aiokafka import AIOKafkaProducer

from streamproc.local import create_topic, start_stack, stop_stack

RESULTS = Path(__file__).parent / "results" / "soak.json"
RATE = 3_000
KEYS = 2_000


def config(name: str, bootstrap: str, dsn: str, state: Path) -> dict[str, Any]:
    """The soak's pipeline."""
    return {
        "pipelineId": name,
        "mode": "streaming",
        "extract": {
            "sourceType": "kafka",
            "connectionParams": {
                "kafka.bootstrap.servers": bootstrap,
                "subscribe": name,
                "startingOffsets": "earliest",
            },
        },
        "transforms": [
            {
                "transformType": "aggregation",
                "parameters": {
                    "groupByColumns": "user_id",
                    "windowColumn": "event_time",
                    "windowDuration": "10 seconds",
                    "aggregations": "value:count,value:sum,value:max",
                },
            }
        ],
        "load": {"sinkType": "postgresql", "table": name, "connectionParams": {"url": dsn}},
        "streamingConfigJson": {
            "checkpointLocation": str(state),
            "queryName": name,
            "outputMode": "update",
            "triggerMode": "processingtime=1 second",
            "watermark": {"eventTimeColumn": "event_time", "delayThreshold": "5 seconds"},
            "lateDataConfig": {"strategy": "separatestream", "lateDataTable": f"{name}_late"},
        },
        "errorHandlingConfig": {"dlqConfig": {"dlqType": "none"}},
    }


def rss_mib(pid: int) -> float:
    """Resident set size of a process, in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (minutes, MiB) points, in MiB per minute."""
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    return sum((x - mx) * (y - my) for x, y in points) / sxx if sxx else 0.0


async def produce(bootstrap: str, topic: str, seconds: float, stop: asyncio.Event) -> int:
    """RATE records a second until seconds passed; returns how many were sent."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, enable_idempotence=False)
    await producer.start()
    rng = random.Random(9)
    sent = 0
    started = time.monotonic()
    try:
        while time.monotonic() - started < seconds and not stop.is_set():
            tick = time.monotonic()
            now = int(time.time() * 1000)
            futures = []
            for _ in range(RATE // 10):
                ts = now - 60_000 if rng.random() < 0.01 else now
                value = {"user_id": f"u{rng.randrange(KEYS)}", "event_time": ts, "value": 1}
                futures.append(await producer.send(topic, json.dumps(value).encode()))
            await asyncio.gather(*futures)
            sent += len(futures)
            await asyncio.sleep(max(0.0, 0.1 - (time.monotonic() - tick)))
    finally:
        await producer.stop()
    return sent


async def soak(minutes: float) -> dict[str, Any]:
    run_dir = Path(tempfile.mkdtemp(prefix="streamproc-soak-"))
    info = start_stack(run_dir, die_with_parent=True)
    name = f"soak_{int(time.time())}"
    worker = None
    try:
        await create_topic(info.bootstrap, name, 4)
        path = run_dir / "soak.json"
        path.write_text(json.dumps(config(name, info.bootstrap, info.dsn, run_dir / "state")))
        worker = subprocess.Popen(
            [str(Path(sys.executable).parent / "streamproc"), "run", str(path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        stop = asyncio.Event()
        producing = asyncio.ensure_future(produce(info.bootstrap, name, minutes * 60, stop))
        curve: list[tuple[float, float]] = []
        started = time.monotonic()
        while not producing.done():
            assert worker.poll() is None, "the worker exited"
            curve.append(((time.monotonic() - started) / 60, rss_mib(worker.pid)))
            last = curve[-1]
            if len(curve) % 6 == 1:
                print(f"  {last[0]:5.1f} min  RSS {last[1]:6.1f} MiB", flush=True)
            await asyncio.sleep(10)
        sent = await producing
        conn = await asyncpg.connect(info.dsn)
        deadline = time.monotonic() + 120
        counted = 0
        while time.monotonic() < deadline:
            counted = await conn.fetchval(
                "SELECT coalesce(sum(records), 0) FROM streamproc_ledger WHERE query = $1", name
            )
            if counted >= sent:
                break
            await asyncio.sleep(1)
        await conn.close()
        worker.send_signal(signal.SIGTERM)
        worker.communicate(timeout=60)
        tail = [p for p in curve if p[0] >= minutes * 2 / 3]
        result = {
            "minutes": minutes,
            "records_sent": sent,
            "records_counted": counted,
            "exact": counted == sent,
            "rss_start_mib": curve[0][1] if curve else None,
            "rss_end_mib": curve[-1][1] if curve else None,
            "rss_peak_mib": max(y for _, y in curve) if curve else None,
            "slope_last_third_mib_per_min": slope(tail) if len(tail) > 1 else None,
            "curve": [[round(x, 2), round(y, 1)] for x, y in curve],
        }
        return result
    finally:
        if worker is not None and worker.poll() is None:
            worker.kill()
            worker.wait()
        stop_stack(run_dir)


def main() -> None:
    """Run the soak and print its result."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.soak", description=__doc__)
    parser.add_argument("--minutes", type=float, default=30.0)
    args = parser.parse_args()
    result = asyncio.run(soak(args.minutes))
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"soak {result['minutes']} min: {result['records_sent']} records, counted exactly: "
        f"{result['exact']}; RSS {result['rss_start_mib']:.1f} -> {result['rss_end_mib']:.1f} "
        f"MiB (peak {result['rss_peak_mib']:.1f}); slope over the last third "
        f"{result['slope_last_third_mib_per_min']:.2f} MiB/min"
    )
    os.sync()


if __name__ == "__main__":
    main()

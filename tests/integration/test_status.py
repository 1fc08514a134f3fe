"""`streamproc status` on the real broker and PostgreSQL: it agrees with the ledger, it sees
records produced after a run, and it exits 2 for a stalled query, 1 for an unknown one."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from streamproc.local import create_topic
from tests.integration.cli_helpers import edit, last_line, run_cli, run_to_the_end, write_config
from tests.kafka_io import produce
from tests.streams import make_stream


async def test_status_agrees_with_the_ledger_and_sees_new_lag(
    kafka_bootstrap: str, pg_dsn: str, pg: Any, unique_name: str, tmp_path: Path
) -> None:
    stream = make_stream(1_000, seed=41)
    config = await run_to_the_end(tmp_path, unique_name, kafka_bootstrap, pg_dsn, stream)

    shown = run_cli(config, kafka_bootstrap, pg_dsn, "status", "--json", "--batches", "1000")
    assert shown.returncode == 0, shown.stderr[-2000:]
    status = json.loads(shown.stdout)
    ledger = await pg.fetch(
        """SELECT partition, max(next_offset) AS next, max(committed_at) AS last
           FROM streamproc_ledger WHERE query = $1 GROUP BY partition ORDER BY partition""",
        unique_name,
    )
    assert [
        (p["partition"], p["committedOffset"], p["endOffset"], p["lag"])
        for p in status["partitions"]
    ] == [(r["partition"], r["next"], len(stream[r["partition"]]), 0) for r in ledger]
    assert status["totalLag"] == 0
    batches = await pg.fetch(
        """SELECT count(*) AS partitions, sum(records) AS records, sum(aggregated) AS aggregated,
                  sum(late) AS late, sum(bad) AS bad, sum(filtered) AS filtered
           FROM streamproc_ledger WHERE query = $1
           GROUP BY committed_at ORDER BY committed_at DESC""",
        unique_name,
    )
    assert [
        (
            b["partitions"],
            b["numInputRows"],
            b["rows"]["aggregated"],
            b["rows"]["late"],
            b["rows"]["bad"],
            b["rows"]["filtered"],
        )
        for b in status["recentBatches"]
    ] == [tuple(r) for r in batches]
    assert sum(b["numInputRows"] for b in status["recentBatches"]) == 1_000
    assert status["boundedRun"]["status"] == "done"
    # The batches shown are the progress table's rows, which agree with the ledger's.
    assert status["circuitBreaker"]["recorded"] is True
    assert status["circuitBreaker"]["state"] == "closed"
    assert status["circuitBreaker"]["retriesInRecentBatches"] == 0

    # Records produced after the run ended: the query lags and, idle, is stale.
    more = make_stream(200, seed=42)
    await produce(kafka_bootstrap, unique_name, more)
    text = run_cli(config, kafka_bootstrap, pg_dsn, "status")
    assert text.returncode == 0, text.stderr[-2000:]
    assert "total lag 200 record(s)" in text.stdout
    stale = run_cli(config, kafka_bootstrap, pg_dsn, "status", "--json", "--stale-after", "0 s")
    assert stale.returncode == 2, stale.stderr[-2000:]
    document = json.loads(stale.stdout)
    assert [p["lag"] for p in document["partitions"]] == [len(more[p]) for p in range(4)]
    assert document["stale"]["stale"] is True
    patient = run_cli(config, kafka_bootstrap, pg_dsn, "status", "--stale-after", "1 hour")
    assert patient.returncode == 0, patient.stderr[-2000:]

    no_broker = run_cli(config, "127.0.0.1:1", pg_dsn, "status")
    assert no_broker.returncode == 1
    assert last_line(no_broker.stderr).startswith(
        f"streamproc: cannot read the ends of topic {unique_name} from 127.0.0.1:1: "
    )


async def test_status_of_an_unknown_query_or_an_unreachable_server_is_one_line(
    kafka_bootstrap: str, pg_dsn: str, unique_name: str, tmp_path: Path
) -> None:
    await create_topic(kafka_bootstrap, unique_name, 2)
    config = write_config(tmp_path, unique_name, kafka_bootstrap, pg_dsn)
    unknown = run_cli(config, kafka_bootstrap, pg_dsn, "status")
    assert unknown.returncode == 1
    assert last_line(unknown.stderr) == (
        f"streamproc: query {unique_name} has no checkpoint in this database: it never ran "
        "against it, or it was reset (check queryName and the PostgreSQL URL)"
    )
    down = run_cli(config, kafka_bootstrap, "postgresql://nobody@127.0.0.1:1/x", "status")
    assert down.returncode == 1
    assert last_line(down.stderr).startswith(
        f"streamproc: query {unique_name}: cannot connect to PostgreSQL at 127.0.0.1:1: "
        "connection refused"
    )


def test_status_of_a_file_source_shows_the_file_and_byte_it_resumes_at(
    pg_dsn: str, unique_name: str, tmp_path: Path
) -> None:
    # Its offsets pack the file's ordinal and the byte (ordinal << 40 | byte): status
    # printed 1099511628326 in text and JSON alike.
    data = tmp_path / "data"
    data.mkdir()
    lines = [
        json.dumps({"user_id": "u1", "event_time": f"2026-01-01T00:0{i}:00Z", "value": i})
        for i in range(4)
    ]
    (data / "a.jsonl").write_text("\n".join(lines[:2]) + "\n")
    second = data / "b.jsonl"
    second.write_text("\n".join(lines[2:]) + "\n")
    os.utime(second, (time.time() + 5, time.time() + 5))  # found after a.jsonl
    config = write_config(tmp_path, unique_name, "127.0.0.1:1", pg_dsn)
    edit(config, lambda doc: doc.update(extract={"sourceType": "file", "path": str(data)}))
    done = run_cli(config, "127.0.0.1:1", pg_dsn)
    assert done.returncode == 0, done.stderr[-2000:]

    text = run_cli(config, "127.0.0.1:1", pg_dsn, "status")
    assert text.returncode == 0, text.stderr[-2000:]
    size = second.stat().st_size
    assert f"path {data}," in text.stdout
    (row,) = [line.split() for line in text.stdout.splitlines() if str(second) in line]
    assert row[:3] == ["0", str(second), str(size)]
    assert str((1 << 40) | size) not in text.stdout
    shown = run_cli(config, "127.0.0.1:1", pg_dsn, "status", "--json")
    (partition,) = json.loads(shown.stdout)["partitions"]
    assert (partition["file"], partition["fileOrdinal"], partition["byte"]) == (
        str(second),
        1,
        size,
    )
    assert partition["committedOffset"] is None

    for bad in ("0", "-1", "x"):
        refused = run_cli(config, "127.0.0.1:1", pg_dsn, "status", "--batches", bad)
        assert refused.returncode == 2, refused.stderr
        assert refused.stderr.startswith("usage: streamproc status"), refused.stderr
        assert "argument --batches" in refused.stderr

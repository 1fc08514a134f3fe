"""What operators do beside live workers, on the real broker and PostgreSQL (issue 18).

- `streamproc reset` while a worker of the query runs: refused with one line naming
  the worker; `--wait` waits for it to stop. A worker whose checkpoint is dropped
  under it anyway (by hand, or a reset that could not see it) stops at its next
  commit with one line and writes nothing into the new checkpoint.
- Two configs of one new queryName started together: exactly one registers it.
- `reset --drop-results` drops only a table registered to the query, the same by
  config and by name, and says each table it drops; a name or path that matches no
  checkpoint is an error.
- A result table dropped by hand between runs stops the next run at start.
"""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
from pathlib import Path
from typing import Any

from streamproc.local import create_topic
from tests.faults.harness import Worker
from tests.integration.cli_helpers import (
    BIN,
    edit,
    env_for,
    last_line,
    run_cli,
    run_to_the_end,
    write_config,
)
from tests.kafka_io import produce
from tests.streams import make_stream
from tests.waiting import wait_until

YES = ("--yes",)


def worker(config: Path, tmp: Path, name: str, bootstrap: str, dsn: str) -> Worker:
    return Worker(config, tmp / f"{name}.log", env=env_for(bootstrap, dsn))


async def ledger_rows(pg: Any, query: str) -> int:
    if await pg.fetchval("SELECT to_regclass('streamproc_ledger')") is None:
        return 0
    return int(await pg.fetchval("SELECT count(*) FROM streamproc_ledger WHERE query = $1", query))


async def test_reset_is_refused_while_a_worker_runs_and_waits_for_it_with_wait(
    kafka_bootstrap: str, pg_dsn: str, pg: Any, unique_name: str, tmp_path: Path
) -> None:
    await create_topic(kafka_bootstrap, unique_name, 2)
    await produce(kafka_bootstrap, unique_name, make_stream(400, partitions=2, seed=3))
    config = write_config(
        tmp_path, unique_name, kafka_bootstrap, pg_dsn, trigger="processingtime=200 milliseconds"
    )
    w = worker(config, tmp_path, "worker", kafka_bootstrap, pg_dsn)
    try:
        await wait_until(lambda: ledger_rows(pg, unique_name), "a first commit", 60)
        refused = run_cli(config, kafka_bootstrap, pg_dsn, "reset", "--yes")
        assert refused.returncode == 1
        assert last_line(refused.stderr) == (
            f"streamproc: query {unique_name} is running (worker {socket.gethostname()}:"
            f"{w.pid}): reset would pull its checkpoint from under it; stop the worker first, "
            "or add --wait to reset once they stop"
        )
        w.assert_alive()
        assert await ledger_rows(pg, unique_name) > 0  # nothing was removed
        waiting = subprocess.Popen(
            [str(BIN / "streamproc"), "reset", str(config), "--yes", "--wait"],
            env=env_for(kafka_bootstrap, pg_dsn),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            await asyncio.sleep(1.0)
            assert waiting.poll() is None  # it waits for the worker
            w.proc.send_signal(signal.SIGTERM)
            assert await w.finish(60) == 0
            out, err = waiting.communicate(timeout=60)
        finally:
            if waiting.poll() is None:
                waiting.kill()
        assert waiting.returncode == 0, err
        assert f"query {unique_name}: removed 2 position(s)" in out
    finally:
        w.stop()
    assert await ledger_rows(pg, unique_name) == 0


async def test_a_worker_whose_checkpoint_is_dropped_under_it_stops_and_writes_nothing_new(
    kafka_bootstrap: str, pg_dsn: str, pg: Any, unique_name: str, tmp_path: Path
) -> None:
    await create_topic(kafka_bootstrap, unique_name, 2)
    await produce(kafka_bootstrap, unique_name, make_stream(200, partitions=2, seed=4))
    config = write_config(
        tmp_path, unique_name, kafka_bootstrap, pg_dsn, trigger="processingtime=200 milliseconds"
    )
    w = worker(config, tmp_path, "worker", kafka_bootstrap, pg_dsn)
    try:
        await wait_until(lambda: ledger_rows(pg, unique_name), "a first commit", 60)
        # What a reset that cannot see the worker's claim does (by hand, or an older
        # streamproc): the checkpoint's rows are deleted while the worker runs.
        for table in ("streamproc_queries", "streamproc_positions", "streamproc_ledger"):
            await pg.execute(f"DELETE FROM {table} WHERE query = $1", unique_name)
        await produce(kafka_bootstrap, unique_name, make_stream(50, partitions=2, seed=5))
        code = await w.finish(60)
    finally:
        w.stop()
    assert code == 1
    assert last_line(w.text()) == (
        f"streamproc: query {unique_name} was reset while this worker ran (its checkpoint is "
        "gone or was made again by another worker): nothing of the batch was written; start "
        "the worker again to run on the checkpoint as it is now"
    )
    assert await ledger_rows(pg, unique_name) == 0  # nothing written into the new checkpoint


async def test_two_configs_of_one_new_query_started_together_register_it_once(
    kafka_bootstrap: str, pg_dsn: str, pg: Any, unique_name: str, tmp_path: Path
) -> None:
    stream = make_stream(600, partitions=4, seed=6)
    await create_topic(kafka_bootstrap, unique_name, 4)
    await produce(kafka_bootstrap, unique_name, stream)
    first = write_config(tmp_path, unique_name, kafka_bootstrap, pg_dsn)
    second = tmp_path / "second" / first.name
    second.parent.mkdir()
    second.write_text(first.read_text())
    edit(second, lambda d: d["load"].update(table=f"{unique_name}_b"))
    workers = [
        worker(first, tmp_path, "a", kafka_bootstrap, pg_dsn),
        worker(second, tmp_path, "b", kafka_bootstrap, pg_dsn),
    ]
    try:
        codes = [await w.finish(120) for w in workers]
    finally:
        for w in workers:
            w.stop()
    assert sorted(codes) == [0, 1], [w.text()[-2000:] for w in workers]
    loser = workers[codes.index(1)]
    line = last_line(loser.text())
    # While the winner runs the loser names it; once the winner's bounded run is over
    # (a slow start of the loser), the checkpoint it left is what the loser finds.
    assert (
        line.startswith(f"streamproc: query {unique_name}: worker ")
        and "runs it with another definition (sink changed from" in line
    ) or line.startswith(
        f"streamproc: query {unique_name}: its checkpoint was made by another definition "
        "(sink changed from"
    ), line
    winner_table = unique_name if codes[0] == 0 else f"{unique_name}_b"
    loser_table = f"{unique_name}_b" if codes[0] == 0 else unique_name
    registered = await pg.fetchval(
        "SELECT result_table FROM streamproc_queries WHERE query = $1", unique_name
    )
    assert registered == winner_table
    assert await pg.fetchval("SELECT to_regclass($1)", loser_table) is None  # never written
    ledger = await pg.fetchval(
        "SELECT sum(records) FROM streamproc_ledger WHERE query = $1", unique_name
    )
    assert ledger == sum(len(r) for r in stream.values())


async def test_reset_drop_results_drops_only_what_the_query_owns(
    kafka_bootstrap: str, pg_dsn: str, pg: Any, unique_name: str, tmp_path: Path
) -> None:
    config = await run_to_the_end(
        tmp_path, unique_name, kafka_bootstrap, pg_dsn, make_stream(200, seed=7)
    )
    # The config now names a hand-made table the query never owned.
    hand_made = f"{unique_name}_mine"
    await pg.execute(f'CREATE TABLE "{hand_made}" (x int)')
    edit(config, lambda d: d["load"].update(table=hand_made))
    refused = run_cli(config, kafka_bootstrap, pg_dsn, "reset", "--drop-results", "--yes")
    assert refused.returncode == 1
    assert last_line(refused.stderr) == (
        f"streamproc: table {hand_made} (load.table) is not query {unique_name}'s: no query "
        f"owns it, and query {unique_name} owns table {unique_name}; --drop-results drops only "
        "a table registered to the query: nothing was changed (drop the table by hand if it "
        "is yours, or reset without --drop-results)"
    )
    assert await pg.fetchval("SELECT to_regclass($1)", hand_made) is not None
    assert await ledger_rows(pg, unique_name) > 0
    # By name, the registered table is dropped, and said.
    env = env_for(kafka_bootstrap, pg_dsn)
    by_name = subprocess.run(
        [str(BIN / "streamproc"), "reset", unique_name, "--dsn", pg_dsn, "--drop-results", *YES],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert by_name.returncode == 0, by_name.stderr
    assert by_name.stdout.strip().endswith(f"; dropped table {unique_name}")
    assert await pg.fetchval("SELECT to_regclass($1)", unique_name) is None
    assert await pg.fetchval("SELECT to_regclass($1)", hand_made) is not None
    # Now nothing of the query is left: a second reset is an error, as a typo is.
    for target in (unique_name, f"{unique_name}_typo", ""):
        done = subprocess.run(
            [str(BIN / "streamproc"), "reset", target, "--dsn", pg_dsn, "--yes"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 1, done.stdout
        assert done.stdout == ""
    assert last_line(done.stderr) == (
        "streamproc: reset needs a config file or a query name; got an empty name"
    )
    typo = subprocess.run(
        [str(BIN / "streamproc"), "reset", str(tmp_path / "configs" / "nope.json"), "--yes"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert typo.returncode == 1
    assert last_line(typo.stderr) == (
        f"streamproc: {tmp_path / 'configs' / 'nope.json'}: no such config file"
    )


async def test_a_result_table_dropped_by_hand_stops_the_next_run(
    kafka_bootstrap: str, pg_dsn: str, pg: Any, unique_name: str, tmp_path: Path
) -> None:
    config = await run_to_the_end(
        tmp_path, unique_name, kafka_bootstrap, pg_dsn, make_stream(200, seed=8)
    )
    batches = await ledger_rows(pg, unique_name)
    await pg.execute(f'DROP TABLE "{unique_name}"')
    again = run_cli(config, kafka_bootstrap, pg_dsn)
    assert again.returncode == 1
    assert last_line(again.stderr) == (
        f"streamproc: query {unique_name}: its result table {unique_name} does not exist, but "
        f"its checkpoint holds {batches} committed batch(es) whose rows were written there "
        "(was it dropped by hand?); re-creating it empty would lose them; restore the table, "
        "or start over with `streamproc reset CONFIG --drop-results`"
    )
    assert await pg.fetchval("SELECT to_regclass($1)", unique_name) is None  # not re-created
    reset = run_cli(config, kafka_bootstrap, pg_dsn, "reset", "--drop-results", "--yes")
    assert reset.returncode == 0, reset.stderr
    rerun = run_cli(config, kafka_bootstrap, pg_dsn)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert json.loads(json.dumps(await ledger_rows(pg, unique_name))) == batches

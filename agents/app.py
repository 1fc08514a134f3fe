"""The Faust app of a streamproc pipeline.

    STREAMPROC_CONFIG=configs/streaming-example.json faust -A agents.app worker -l info

Faust hosts the worker (CLI, lifecycle, signals, logging); the pipeline's
hot loop is one `@app.task` that fetches record batches with aiokafka, since
a per-record Faust stream moves ~11K records/s against ~290K/s for batches
(OPERATING.md, "Workers"). Start the same command several times to scale out:
the workers share the topic's partitions through one consumer group.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from pathlib import Path
from typing import NoReturn

import faust
from faust.app import BootStrategy

from streamproc.batch.plan import BatchPlan
from streamproc.commands.preflight import preflight
from streamproc.commands.run import store_factory_for, summary_lines
from streamproc.runtime.logcontext import log_context
from streamproc.runtime.logformat import restyle_host_handlers
from streamproc.runtime.loglevel import apply_log_level
from streamproc.runtime.query import QueryFailedError, StreamingQuery
from streamproc.state.base import LocalStateError

log = logging.getLogger("agents.app")

_config_path = os.environ.get("STREAMPROC_CONFIG")
if not _config_path:
    sys.exit(
        "agents.app: set STREAMPROC_CONFIG to a pipeline config "
        "(e.g. configs/streaming-example.json)"
    )
# The same check, and the same lines, as `streamproc run`: any refusal is one
# line and exit 1, never a traceback.
_checked = preflight(_config_path)
for _line in _checked.problem_lines(_config_path):
    print(_line, file=sys.stderr)
if _checked.plan is None:
    sys.exit(1)
if isinstance(_checked.plan, BatchPlan):
    # A worker serves a stream with its group; a batch job reads a bounded input
    # once, loads it in one transaction and ends: nothing for Faust to host.
    print(
        "streamproc: mode 'batch' runs as a job with `streamproc run CONFIG`, not in a "
        "Faust worker (set mode: streaming to run it here)",
        file=sys.stderr,
    )
    sys.exit(1)
plan = _checked.plan
for _note in _checked.notes:
    log.info("%s", _note)

# Faust's own data directory (relative to the cwd by default, so it littered
# wherever the worker started): beside the query's local state instead.
_datadir = Path(plan.checkpoint_location) / plan.query_name / "faust"

app = faust.App(
    f"streamproc-{plan.query_name}-host",
    broker=f"kafka://{plan.bootstrap}",
    store="memory://",
    web_enabled=bool(os.environ.get("STREAMPROC_WEB_PORT")),
    web_port=int(os.environ.get("STREAMPROC_WEB_PORT") or 6066),
    topic_allow_declare=False,
    producer_acks=1,
    datadir=str(_datadir),
)
# No Faust consumer. The app has no agents, topics or tables, yet Faust's
# consumer would join a group of its own (the app id, for its leader-assignor
# topic), and the tables' recovery, which `@app.task`s wait for, completes only
# after that join: about 30 s on the local broker, whose first join waits half
# the session timeout (Faust's broker_session_timeout is 60 s). The query joins
# its own group with its own consumer; without Faust's, the task starts at once
# and the worker keeps its signals, web server and clean stop. No Faust producer
# either: the query writes with its own clients, and a file source may have no
# broker at all for Faust to connect to.
# Faust's web server only when asked for (STREAMPROC_WEB_PORT): `faust worker`
# turns it on by default, on 0.0.0.0:6066, whatever the app's settings say, and a
# second worker on the host then died binding the same port; the query's metrics
# have their own server (loggingConfig.metricsPort).
app.boot_strategy = BootStrategy(
    app,
    enable_kafka_consumer=False,
    enable_kafka_producer=False,
    enable_web=bool(os.environ.get("STREAMPROC_WEB_PORT")),
)


def _stop_with(message: str) -> NoReturn:
    """One `streamproc:` line and exit 1, as `streamproc run` does (Faust would exit 0).

    On the process's own stderr: a running worker redirects `sys.stderr` into its
    log, where the line became a WARNING record of logger `mode.redirect`.
    """
    print(f"streamproc: {message}", file=sys.__stderr__ or sys.stderr, flush=True)
    logging.shutdown()
    os._exit(1)


@app.on_worker_init.connect
def _create_datadir(sender: faust.App, **_: object) -> None:
    # Faust creates only the last level of its datadir; made here rather than
    # on import, which (validate's check, a `faust --help`) should write nothing.
    try:
        _datadir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        _stop_with(f"local state at {_datadir} cannot be created: {exc}")


@app.task
async def run_pipeline() -> None:
    """Run the pipeline's query until it ends or the worker stops."""
    # Faust set up logging from its -l option by now (colours, its own layout):
    # its handlers keep their levels and write our lines from here on, with the
    # pipeline, query and batch; logLevel governs streamproc's lines.
    try:
        restyle_host_handlers()
    except ValueError as exc:
        _stop_with(str(exc))
    apply_log_level(plan.log_level)
    try:
        factory = store_factory_for(plan)
    except LocalStateError as exc:
        _stop_with(str(exc))
    query = StreamingQuery(plan, factory)
    loop = asyncio.get_running_loop()
    started = loop.time()
    run = asyncio.ensure_future(query.run())
    try:
        stats = await asyncio.shield(run)
    except asyncio.CancelledError:
        # The worker is stopping (SIGINT/SIGTERM): finish and commit the batch
        # in flight before letting go.
        query.request_stop()
        await run
        raise
    except QueryFailedError as exc:
        # The query already closed its consumer, producers and pool; Faust's
        # shutdown would exit 0, and a failed query must not look like success.
        _stop_with(str(exc))
    with log_context(pipeline_id=plan.pipeline_id, query=plan.query_name):
        for line in summary_lines(plan, stats, loop.time() - started):
            log.info("%s", line)
    # A bounded run (once, availablenow) is done: stop the worker cleanly.
    os.kill(os.getpid(), signal.SIGTERM)

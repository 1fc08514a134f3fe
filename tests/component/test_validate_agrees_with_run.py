"""Whatever `streamproc validate` accepts, `streamproc run` and the Faust worker accept; whatever
one refuses, all three refuse with the same lines (issue 12).

Walked: every config in configs/ (each recorded below with its exact warnings, so a new one
must say whether it runs), every case of the broken-config suite, and one case per refusal
of the run plan. `run` is called in this process, and only on configs it refuses (an
accepted one would start a query); the Faust app, which checks its config when imported,
runs in a subprocess for the configs, the plan refusals and a few broken configs.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from streamproc import cli
from streamproc.batch.plan import BatchPlan, batch_plan_from_config
from streamproc.commands.preflight import preflight
from streamproc.commands.run import run_from_cli
from streamproc.config import load_config
from streamproc.runtime.planner import plan_from_config
from tests.unit.test_config_broken import BASE, CASES, DELETE, mutate

ROOT = Path(__file__).resolve().parents[2]
CONFIG_FILES = sorted((ROOT / "configs").glob("*.json"))
S = "streamingConfigJson"
SECRET = "s3cr3t-Pa55"
# Variables that configs/ or the broken suite read; unset, every outcome is fixed.
ENV_NAMES = (
    "STREAMPROC_KAFKA_BOOTSTRAP",
    "STREAMPROC_PG_DSN",
    "STREAMPROC_CHECKPOINT_DIR",
    "PG_PASSWORD",
    "ORDERS_PG_PASSWORD",
)

ENABLE_IDEMPOTENCE_IGNORED = (
    f"{S}.enableIdempotence: ignored; results are exactly-once through the PostgreSQL "
    "checkpoint whatever its value, and Kafka writes (dead letters, a kafka sink) are "
    "at-least-once, with the source position in headers"
)
BUFFER_SIZE_IGNORED = (
    "errorHandlingConfig.dlqConfig.bufferSize: ignored; dead letters are not buffered across "
    "batches: each micro-batch sends its own and waits for the broker's acknowledgement "
    "before its checkpoint commits"
)
BATCH_SECTION_IGNORED = f'{S}: ignored because mode is \'batch\'; set "mode": "streaming" to use it'


@dataclass(frozen=True)
class Outcome:
    """What validate and run say about one config: warnings, then the refusal (if any)."""

    warnings: list[str] = field(default_factory=list)
    refusal: str | None = None


# Every config in configs/, and what validate says about it. All of them (streaming
# queries and batch jobs) plan; a config that could not run would be recorded here with
# its refusal.
CONFIGS: dict[str, Outcome] = {
    "fraud-detection.json": Outcome([]),
    "sales-dashboard.json": Outcome([]),
    "sales-daily-report.json": Outcome([]),
    "streaming-example.json": Outcome([ENABLE_IDEMPOTENCE_IGNORED, BUFFER_SIZE_IGNORED]),
    "user-analytics.json": Outcome([]),
    "user-sessions.json": Outcome([]),
}

P = "transforms[0].parameters"
# Configs the format accepts and the run plan refuses: one line naming field, value and
# what is accepted.
PLAN_REFUSALS = [
    pytest.param(
        {("mode",): "batch", ("extract", "connectionParams", "startingOffsets"): "latest"},
        Outcome(
            [BATCH_SECTION_IGNORED],
            "extract.connectionParams.startingOffsets: 'latest' reads nothing in batch mode "
            "(the end offsets are taken when the job starts); use earliest, the batch default",
        ),
        id="batch-latest-offsets",
    ),
    pytest.param(
        {("mode",): "batch", ("load",): {"sinkType": "kafka", "topic": "order-totals"}},
        Outcome(
            [BATCH_SECTION_IGNORED],
            "load.sinkType: 'kafka' is not supported in batch mode; use postgresql",
        ),
        id="batch-kafka-sink",
    ),
    pytest.param(
        {
            ("mode",): "batch",
            ("load", "writeMode"): "upsert",
            ("load", "upsertKeys"): "user_id",
        },
        Outcome(
            [BATCH_SECTION_IGNORED],
            "load.upsertKeys: (user_id) is not the key of the aggregation's rows; use "
            "(user_id, window_start, window_end)",
        ),
        id="batch-upsert-keys-not-the-row-key",
    ),
    pytest.param(
        {
            ("errorHandlingConfig", "dlqConfig"): {"dlqType": "postgresql"},
            ("load", "table"): "t" * 60,
        },
        Outcome(
            [],
            f"errorHandlingConfig.dlqConfig.table: the default dead-letter table {'t' * 60}_dlq "
            "is longer than 63 characters; name one with dlqConfig.table",
        ),
        id="postgresql-dlq-default-table-too-long",
    ),
    pytest.param(
        {(S, "stateTimeout"): "5 minutes", (S, "outputMode"): "complete"},
        Outcome(
            [],
            f"{S}.stateTimeout: 5 minutes on a windowed aggregation is not supported in "
            "outputMode 'complete' (its table keeps every window, so no window's state may "
            "go); use 'update' or 'append', or remove stateTimeout",
        ),
        id="state-timeout-windowed-complete",
    ),
    pytest.param(
        {
            ("transforms", 0, "parameters", "stateTimeout"): "5 minutes",
            (S, "watermark"): DELETE,
            (S, "outputMode"): "update",
        },
        Outcome(
            [
                f"{S}.watermark: not set, so the windows of this windowed 'update' query never "
                "close: a record of any age still changes its window, and every (key, window) "
                "stays in state (state grows without bound); set watermark {eventTimeColumn, "
                "delayThreshold} to close a window once event time passes its end by "
                "delayThreshold"
            ],
            f"{P}.stateTimeout: 5 minutes on a windowed aggregation needs {S}.watermark (a (key, "
            "window) is idle in event time, against the watermark); add a watermark, or "
            "remove stateTimeout",
        ),
        id="transform-state-timeout-windowed-without-watermark",
    ),
    pytest.param(
        {("transforms",): [], (S, "stateTimeout"): "1 hour"},
        Outcome(
            [],
            f"{S}.stateTimeout: 1 hour means nothing without an aggregation (no state is "
            "kept); remove it",
        ),
        id="no-aggregation-state-timeout",
    ),
    pytest.param(
        {("extract", "connectionParams", "kafka.ssl.truststore.location"): "/etc/kafka.jks"},
        Outcome(
            [],
            "extract.connectionParams.kafka.ssl.truststore.location: not supported; supported: "
            "kafka.sasl.kerberos.domain.name, kafka.sasl.kerberos.service.name, "
            "kafka.sasl.mechanism, kafka.sasl.password, kafka.sasl.plain.password, "
            "kafka.sasl.plain.username, kafka.sasl.username, kafka.security.protocol, "
            "kafka.ssl.ca.location, kafka.ssl.cafile, kafka.ssl.certfile, "
            "kafka.ssl.certificate.location, kafka.ssl.key.location, kafka.ssl.key.password, "
            "kafka.ssl.keyfile",
        ),
        id="ssl-key-unknown",
    ),
    pytest.param(
        {
            ("extract", "connectionParams", "kafka.ssl.cafile"): "/etc/kafka/ca.pem",
            ("extract", "connectionParams", "kafka.ssl.key.password"): SECRET,
        },
        Outcome(
            [],
            "extract.connectionParams.kafka.ssl.cafile: used only with kafka.security.protocol "
            "SSL or SASL_SSL, and the protocol is PLAINTEXT; set the protocol or remove the "
            "kafka.ssl.* keys",
        ),
        id="ssl-keys-without-ssl",
    ),
    pytest.param(
        {
            ("extract", "connectionParams", "kafka.security.protocol"): "SASL_SSL",
            ("extract", "connectionParams", "kafka.sasl.password"): SECRET,
        },
        Outcome(
            [],
            "extract.connectionParams.kafka.sasl.username: required by SASL mechanism PLAIN",
        ),
        id="sasl-without-user",
    ),
    pytest.param(
        {("load",): {"sinkType": "kafka", "topic": "order-totals"}},
        Outcome(
            [],
            "load.connectionParams.url: a kafka sink keeps its checkpoint (ledger, partials) "
            "in PostgreSQL; give url (or set STREAMPROC_PG_DSN)",
        ),
        id="kafka-sink-without-checkpoint-database",
    ),
]

# Batch jobs that validate (and run with `streamproc run`), with validate's warnings; the
# Faust worker refuses them with FAUST_BATCH (a worker serves streams).
BATCH_ACCEPTED = [
    pytest.param({("mode",): "batch"}, [BATCH_SECTION_IGNORED], id="batch-kafka"),
    pytest.param(
        {
            ("mode",): "batch",
            ("extract",): {"sourceType": "file", "path": "/data/orders/*.jsonl"},
            ("errorHandlingConfig", "dlqConfig", "bootstrapServers"): "localhost:9092",
            ("load", "writeMode"): "upsert",
            ("load", "upsertKeys"): "user_id, window_start, window_end",
        },
        [BATCH_SECTION_IGNORED],
        id="batch-file-upsert",
    ),
    pytest.param(
        {("mode",): "batch", ("transforms",): [], (S,): DELETE},
        [],
        id="batch-without-aggregation",
    ),
    pytest.param(
        {("mode",): "batch", ("errorHandlingConfig", "dlqConfig"): {"dlqType": "postgresql"}},
        [BATCH_SECTION_IGNORED],
        id="batch-postgresql-dlq",
    ),
]
FAUST_BATCH = (
    "streamproc: mode 'batch' runs as a job with `streamproc run CONFIG`, not in a Faust "
    "worker (set mode: streaming to run it here)"
)

# Broken configs the Faust app is also started on (one per kind of check: a value, an
# environment reference, a relation between fields).
FAUST_BROKEN = ("trigger-bad-unit", "env-unset", "append-without-watermark")


@pytest.fixture(autouse=True)
def _fixed_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ENV_NAMES:
        monkeypatch.delenv(name, raising=False)


def _validate(path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str]]:
    capsys.readouterr()
    code = cli.main(["validate", str(path)])
    return code, capsys.readouterr().err.splitlines()


def _run(path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str]]:
    capsys.readouterr()
    code = run_from_cli(str(path))
    return code, capsys.readouterr().err.splitlines()


def _expected_lines(path: Path, outcome: Outcome) -> list[str]:
    refusal = [f"{path}: {outcome.refusal}"] if outcome.refusal else []
    return [f"{path}: warning: {w}" for w in outcome.warnings] + refusal


def _faust_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ENV_NAMES and k != "STREAMPROC_CONFIG"}


def _faust_import(path: Path) -> subprocess.CompletedProcess[str]:
    """Import agents.app (what `faust -A agents.app worker` does first) with this config."""
    return subprocess.run(
        [sys.executable, "-c", "import agents.app"],
        cwd=ROOT,
        env={**_faust_env(), "STREAMPROC_CONFIG": str(path)},
        capture_output=True,
        text=True,
        timeout=120,
    )


def _faust_imports(paths: list[Path]) -> Iterator[subprocess.CompletedProcess[str]]:
    with ThreadPoolExecutor(max_workers=2) as pool:
        yield from pool.map(_faust_import, paths)


def test_every_config_file_is_recorded() -> None:
    assert sorted(CONFIGS) == [p.name for p in CONFIG_FILES]


@pytest.mark.parametrize("path", CONFIG_FILES, ids=lambda p: p.name)
def test_every_config_file_validates_and_plans(
    path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    outcome = CONFIGS[path.name]
    code, err = _validate(path, capsys)
    assert err == _expected_lines(path, outcome)
    assert code == (1 if outcome.refusal else 0)
    checked = preflight(path)
    assert (checked.plan is None) == (outcome.refusal is not None)
    if isinstance(checked.plan, BatchPlan):
        assert checked.plan == batch_plan_from_config(load_config(path))
    elif checked.plan is not None:
        # The planning path of reset, the demo and the fault workers gives the same plan.
        assert checked.plan == plan_from_config(load_config(path))


@pytest.mark.parametrize(("changes", "outcome"), PLAN_REFUSALS)
def test_a_plan_refusal_is_the_same_line_in_validate_and_run(
    changes: dict[tuple[Any, ...], Any],
    outcome: Outcome,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = tmp_path / "refused.json"
    path.write_text(json.dumps(mutate(changes)))
    expected = _expected_lines(path, outcome)
    assert _validate(path, capsys) == (1, expected)
    assert _run(path, capsys) == (1, expected)
    assert SECRET not in "\n".join(expected)


@pytest.mark.parametrize(("changes", "warnings"), BATCH_ACCEPTED)
def test_a_batch_job_validates_and_plans(
    changes: dict[tuple[Any, ...], Any],
    warnings: list[str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = tmp_path / "batch.json"
    path.write_text(json.dumps(mutate(changes)))
    assert _validate(path, capsys) == (0, _expected_lines(path, Outcome(warnings)))
    checked = preflight(path)
    assert isinstance(checked.plan, BatchPlan)


@pytest.mark.parametrize(("changes", "errors"), CASES)
def test_a_broken_config_is_refused_alike_by_validate_and_run(
    changes: dict[tuple[Any, ...], Any],
    errors: list[str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(mutate(changes)))
    code, err = _validate(path, capsys)
    assert code == 1
    assert [line for line in err if ": warning: " not in line] == [f"{path}: {e}" for e in errors]
    assert _run(path, capsys) == (code, err)


def test_the_faust_worker_agrees_with_validate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cases: list[Path] = [p for p in CONFIG_FILES if json.loads(p.read_text())["mode"] != "batch"]
    for param in PLAN_REFUSALS:
        changes, _ = param.values
        path = tmp_path / f"{param.id}.json"
        path.write_text(json.dumps(mutate(changes)))
        cases.append(path)
    for param in CASES:
        if param.id in FAUST_BROKEN:
            changes, _ = param.values
            path = tmp_path / f"{param.id}.json"
            path.write_text(json.dumps(mutate(changes)))
            cases.append(path)
    batch: list[Path] = [p for p in CONFIG_FILES if p not in cases]
    assert len(cases) + len(batch) == len(CONFIG_FILES) + len(PLAN_REFUSALS) + len(FAUST_BROKEN)
    for param in BATCH_ACCEPTED:
        changes, _ = param.values
        path = tmp_path / f"{param.id}.json"
        path.write_text(json.dumps(mutate(changes)))
        batch.append(path)
    for path, done in zip(cases + batch, _faust_imports(cases + batch), strict=True):
        code, err = _validate(path, capsys)
        if path in batch:
            # validate accepts it for `streamproc run`; the worker says where it runs.
            assert code == 0
            code, err = 1, [*err, FAUST_BATCH]
        assert (done.returncode, done.stderr.splitlines()) == (code, err), path
        assert "Traceback" not in done.stderr


def test_the_base_config_of_the_broken_suite_runs() -> None:
    assert preflight(copy.deepcopy(BASE), env={}).ok

"""What `validate` and `run` say before a run: options the run ignores, windows that never
close, what checkpointLocation holds; and validate stays free of the Kafka and PostgreSQL
clients."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from streamproc import cli
from streamproc.commands.preflight import preflight
from streamproc.config import validate_config
from streamproc.runtime.plan import QueryPlan
from tests.unit.test_config_broken import BASE, mutate

S = "streamingConfigJson"
DLQ = "errorHandlingConfig.dlqConfig"
CHECKPOINT_NOTE = (
    f"{S}.checkpointLocation: unlike Spark, not the checkpoint: offsets, partial aggregates "
    "and the ledger are kept in PostgreSQL, keyed by queryName 'orders'; this directory "
    "holds only local RocksDB working state, rebuilt from PostgreSQL whenever a worker takes "
    "a partition (to start the query over, use streamproc reset, not rm)"
)


def quiet(changes: dict[tuple[Any, ...], Any] | None = None) -> dict[str, Any]:
    """BASE with ``changes``."""
    return mutate(dict(changes or {}))


def test_a_config_without_ignored_options_plans_without_warnings() -> None:
    checked = preflight(quiet(), env={})
    assert checked.ok and checked.errors == [] and checked.warnings == []
    assert checked.notes == [CHECKPOINT_NOTE]
    assert checked.plan is not None and checked.plan.log_level == "INFO"


@pytest.mark.parametrize(
    ("changes", "warning"),
    [
        (
            {(S, "enableIdempotence"): False},
            f"{S}.enableIdempotence: ignored; results are exactly-once through the PostgreSQL "
            "checkpoint whatever its value, and Kafka writes (dead letters, a kafka sink) are "
            "at-least-once, with the source position in headers",
        ),
        (
            {(S, "maxFilesPerTrigger"): 10},
            f"{S}.maxFilesPerTrigger: ignored; it limits a file source, and this one reads "
            "Kafka: a micro-batch is capped by maxRecordsPerTrigger (else "
            "extract.connectionParams.maxOffsetsPerTrigger, else a default cap)",
        ),
        (
            {(S, "onFileTruncated"): "continue"},
            f"{S}.onFileTruncated: ignored; it applies to a file source, and this one reads "
            "Kafka: a topic whose offsets went back (re-created or truncated) stops the query "
            "with one line",
        ),
        (
            {(S, "onFileDeleted"): "stop"},
            f"{S}.onFileDeleted: ignored; it applies to a file source, and this one reads "
            "Kafka: records deleted (retention) before they were read stop the query with one "
            "line",
        ),
        (
            {("errorHandlingConfig", "dlqConfig", "bufferSize"): 500},
            f"{DLQ}.bufferSize: ignored; dead letters are not buffered across batches: each "
            "micro-batch sends its own and waits for the broker's acknowledgement before its "
            "checkpoint commits",
        ),
        (
            {("errorHandlingConfig", "dlqConfig", "producerConfig"): {"linger.ms": "50"}},
            f"{DLQ}.producerConfig: ignored; the dead-letter producer uses acks=all and the "
            "source's kafka.security.protocol, kafka.sasl.* and kafka.ssl.* settings",
        ),
        (
            {("extract", "pathGlobFilter"): "*.log"},
            "extract.pathGlobFilter: ignored; it applies to a file source's directory, and "
            "this one reads Kafka",
        ),
    ],
    ids=[
        "enableIdempotence",
        "maxFilesPerTrigger",
        "onFileTruncated",
        "onFileDeleted",
        "bufferSize",
        "producerConfig",
        "glob",
    ],
)
def test_an_ignored_option_gives_one_warning_naming_it(
    changes: dict[tuple[Any, ...], Any], warning: str
) -> None:
    checked = preflight(quiet(changes), env={})
    assert checked.ok
    assert checked.warnings == [warning]


def test_ignored_options_warn_once_each_in_order() -> None:
    config = quiet(
        {
            (S, "enableIdempotence"): True,
            (S, "maxFilesPerTrigger"): 1,
            ("errorHandlingConfig", "dlqConfig", "bufferSize"): 100,
            ("errorHandlingConfig", "dlqConfig", "producerConfig"): {},
        }
    )
    fields = [w.split(":")[0] for w in preflight(config, env={}).warnings]
    assert fields == [
        f"{S}.enableIdempotence",
        f"{S}.maxFilesPerTrigger",
        f"{DLQ}.bufferSize",
        f"{DLQ}.producerConfig",
    ]


@pytest.mark.parametrize("mode", ["update", "complete"])
def test_a_windowed_query_without_watermark_warns_that_its_windows_never_close(
    mode: str,
) -> None:
    config = quiet({(S, "outputMode"): mode})
    del config[S]["watermark"]
    report = validate_config(config, env={})
    assert report.errors == []
    assert report.warnings == [
        f"{S}.watermark: not set, so the windows of this windowed '{mode}' query never close: "
        "a record of any age still changes its window, and every (key, window) stays in state "
        "(state grows without bound); set watermark {eventTimeColumn, delayThreshold} to close "
        "a window once event time passes its end by delayThreshold"
    ]


@pytest.mark.parametrize(("timeout", "warns"), [("10 minutes", True), ("9 minutes", False)])
def test_a_window_state_timeout_not_shorter_than_the_window_warns(
    timeout: str, warns: bool
) -> None:
    config = quiet({(S, "outputMode"): "update", (S, "stateTimeout"): timeout})
    checked = preflight(config, env={})
    assert checked.ok and checked.plan is not None  # it runs either way
    assert checked.warnings == (
        [
            f"{S}.stateTimeout: 10 minutes is not shorter than windowDuration (10 minutes), "
            "so no window ever expires before the watermark closes it; use a shorter "
            "stateTimeout, or remove it"
        ]
        if warns
        else []
    )


def test_a_non_windowed_update_query_without_watermark_does_not_warn() -> None:
    config = quiet({(S, "outputMode"): "update"})
    del config[S]["watermark"]
    params = config["transforms"][0]["parameters"]
    del params["windowColumn"], params["windowDuration"]
    config["dataQualityConfig"]["enabled"] = False
    assert validate_config(config, env={}).warnings == []


def test_validate_prints_warnings_on_stderr_and_the_note_on_stdout(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "orders.json"
    path.write_text(json.dumps(quiet({(S, "enableIdempotence"): True})))
    assert cli.main(["validate", str(path)]) == 0
    out, err = capsys.readouterr()
    assert err.splitlines() == [
        f"{path}: warning: {S}.enableIdempotence: ignored; results are exactly-once through "
        "the PostgreSQL checkpoint whatever its value, and Kafka writes (dead letters, a kafka "
        "sink) are at-least-once, with the source position in headers"
    ]
    assert out.splitlines() == [f"{path}: note: {CHECKPOINT_NOTE}", f"{path}: ok"]


def test_validate_imports_no_kafka_postgres_or_faust_client(tmp_path: Path) -> None:
    path = tmp_path / "orders.json"
    path.write_text(json.dumps(BASE))
    probe = (
        "import sys; from streamproc import cli; code = cli.main(['validate', sys.argv[1]]); "
        "print(sorted(m for m in ('aiokafka', 'asyncpg', 'faust') if m in sys.modules)); "
        "sys.exit(code)"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe, str(path)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "[]"


@pytest.mark.parametrize(
    ("offsets", "want"), [(None, "earliest"), ("latest", "latest"), ("earliest", "earliest")]
)
def test_a_file_source_streams_with_its_files_limit_and_no_warning(
    offsets: str | None, want: str
) -> None:
    changes: dict[tuple[Any, ...], Any] = {
        ("extract",): {"sourceType": "file", "path": "/data/in/*.jsonl"},
        (S, "maxFilesPerTrigger"): 3,
        (S, "onFileTruncated"): "Continue",
        (S, "onFileDeleted"): "stop",
        ("errorHandlingConfig", "dlqConfig"): {"dlqType": "postgresql"},
    }
    if offsets is not None:
        changes[("extract",)]["connectionParams"] = {"startingOffsets": offsets}
    checked = preflight(quiet(changes), env={})
    assert checked.ok, checked.errors
    assert checked.warnings == []
    plan = checked.plan
    assert isinstance(plan, QueryPlan)
    assert (plan.source_type, plan.topic, plan.max_files_per_trigger) == (
        "file",
        "/data/in/*.jsonl",
        3,
    )
    assert (plan.on_file_truncated, plan.on_file_deleted) == ("continue", "stop")
    # Spark's file source reads the files already there; Kafka's default is latest.
    assert plan.starting_offsets == want
    assert plan.file_patterns is None


def test_a_streaming_file_source_reads_the_names_pathglobfilter_gives() -> None:
    changes: dict[tuple[Any, ...], Any] = {
        ("extract",): {"sourceType": "file", "path": "in", "pathGlobFilter": "*.log, *.log.gz"},
        ("errorHandlingConfig", "dlqConfig"): {"dlqType": "postgresql"},
    }
    checked = preflight(quiet(changes), env={})
    assert checked.ok and checked.warnings == [], (checked.errors, checked.warnings)
    assert isinstance(checked.plan, QueryPlan)
    assert checked.plan.file_patterns == ("*.log", "*.log.gz")


def file_job() -> dict[str, Any]:
    """BASE as a batch job over a directory of files."""
    config = quiet({("mode",): "batch", ("extract",): {"sourceType": "file", "path": "in"}})
    del config["streamingConfigJson"]
    config["errorHandlingConfig"] = {"dlqConfig": {"dlqType": "postgresql"}}
    return config


@pytest.mark.parametrize(
    ("value", "patterns"),
    [
        ("*.log", ("*.log",)),
        ("*.jsonl, *.jsonl.gz", ("*.jsonl", "*.jsonl.gz")),
        (["*.json", "data-*.txt"], ("*.json", "data-*.txt")),
    ],
)
def test_a_batch_jobs_directory_is_read_by_pathglobfilter_else_by_json_names(
    value: Any, patterns: tuple[str, ...]
) -> None:
    config = file_job()
    checked = preflight(config, env={})
    assert checked.ok, checked.errors
    assert getattr(checked.plan, "file_patterns", None) == (
        "*.json",
        "*.jsonl",
        "*.ndjson",
        "*.json.gz",
        "*.jsonl.gz",
        "*.ndjson.gz",
    )
    config["extract"]["pathGlobFilter"] = value
    checked = preflight(config, env={})
    assert checked.ok and checked.warnings == [], (checked.errors, checked.warnings)
    assert getattr(checked.plan, "file_patterns", None) == patterns


@pytest.mark.parametrize(
    ("value", "error"),
    [
        ("in/*.jsonl", "'in/*.jsonl' is a path; a pattern matches a file's name in the directory"),
        ("*.jsonl,", "holds an empty pattern"),
        ([], "holds an empty pattern"),
        (5, "expected a list of file-name patterns"),
    ],
)
def test_a_pathglobfilter_that_is_no_file_name_pattern_is_refused(value: Any, error: str) -> None:
    config = file_job()
    config["extract"]["pathGlobFilter"] = value
    checked = preflight(config, env={})
    assert not checked.ok
    (line,) = checked.errors
    assert line.startswith("extract.pathGlobFilter: ") and error in line, line

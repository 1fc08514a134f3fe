"""Everything known about a config before a run starts: `validate` and `run` share it.

`streamproc validate`, `streamproc run` and the Faust worker (agents/app.py)
all call :func:`preflight`, which validates the config and then builds the run
plan: so whatever validates also runs, and a refusal is the same line in all
three. It also says which accepted options the run ignores, and what
`checkpointLocation` means here. Pure: it imports no Kafka or PostgreSQL client.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from streamproc.batch.plan import BatchPlan, batch_plan_from_config
from streamproc.config import PipelineConfig, ignored, validate_config
from streamproc.config.loader import ConfigSource
from streamproc.config.transform import aggregation_transforms
from streamproc.runtime.plan import QueryPlan
from streamproc.runtime.planner import plan_from_config

_S = "streamingConfigJson"


@dataclass(frozen=True)
class Preflight:
    """The outcome of :func:`preflight`.

    Attributes:
        plan: the run plan (a streaming query's, or a batch job's), or None when the
            config is invalid or refused.
        errors: one line per problem, or the one refusal of the plan.
        warnings: one line per accepted-but-worth-knowing setting.
        notes: what a setting means here when that differs from Spark (valid configs only).
    """

    plan: QueryPlan | BatchPlan | None
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when the config validates and plans (warnings allowed)."""
        return self.plan is not None

    def problem_lines(self, path: str) -> list[str]:
        """Warnings, then errors, as `validate` and `run` print them on stderr."""
        warnings = [f"{path}: warning: {w}" for w in self.warnings]
        # File-level errors (unreadable, not JSON) already name the file.
        errors = [e if e.startswith(path) else f"{path}: {e}" for e in self.errors]
        return warnings + errors


def preflight(source: ConfigSource, env: Mapping[str, str] | None = None) -> Preflight:
    """Validate a config and build its run plan.

    Args:
        source: a path to a JSON file, or the already-parsed JSON object.
        env: variables for ``${NAME}`` references and STREAMPROC_PG_DSN
            (default: ``os.environ``).

    Returns:
        The plan, or the errors; never raises for a bad or refused config.
    """
    report = validate_config(source, env)
    config = report.config
    if config is None:
        return Preflight(None, report.errors, report.warnings)
    warnings = report.warnings + ignored_options(config)
    try:
        plan: QueryPlan | BatchPlan = (
            plan_from_config(config, env) if config.is_streaming else batch_plan_from_config(config)
        )
    except ValueError as exc:
        return Preflight(None, [str(exc)], warnings)
    return Preflight(plan, [], warnings, checkpoint_notes(config))


def ignored_options(cfg: PipelineConfig) -> list[str]:
    """One warning per option given in the config that the run accepts and ignores.

    These are keys of the original format that no part of the run plan carries;
    each warning says what the run does instead (the texts are
    ``config/ignored.py``'s, which CONFIG.md lists too).
    """
    out: list[str] = [] if cfg.is_streaming else _ignored_in_batch(cfg)
    streaming = cfg.streaming if cfg.is_streaming else None
    given = streaming.model_fields_set if streaming is not None else set()
    if "enable_idempotence" in given:
        out.append(ignored.ENABLE_IDEMPOTENCE.warning())
    if cfg.extract.source_type == "kafka":
        if "max_files_per_trigger" in given:
            out.append(ignored.MAX_FILES_PER_TRIGGER.warning())
        if "on_file_truncated" in given:
            out.append(ignored.ON_FILE_TRUNCATED.warning())
        if "on_file_deleted" in given:
            out.append(ignored.ON_FILE_DELETED.warning())
    if cfg.extract.source_type == "kafka" and cfg.extract.path_glob_filter is not None:
        out.append(ignored.KAFKA_PATH_GLOB_FILTER.warning())
    dlq = cfg.error_handling.dlq.model_fields_set
    if "buffer_size" in dlq:
        out.append(ignored.DLQ_BUFFER_SIZE.warning())
    if "producer_config" in dlq:
        out.append(ignored.DLQ_PRODUCER_CONFIG.warning())
    return out


def _ignored_in_batch(cfg: PipelineConfig) -> list[str]:
    out: list[str] = []
    found = aggregation_transforms(cfg.transforms)
    if found and found[0][1].state_timeout_ms is not None:
        path = f"transforms[{found[0][0]}].parameters.stateTimeout"
        out.append(ignored.BATCH_STATE_TIMEOUT.warning(path))
    if cfg.logging.model_fields_set & {"metrics_port", "metrics_address"}:
        out.append(ignored.BATCH_METRICS.warning())
    return out


def checkpoint_notes(cfg: PipelineConfig) -> list[str]:
    """What `checkpointLocation` holds here, which is not what it holds in Spark."""
    if cfg.streaming is None or not cfg.is_streaming:
        return []
    return [
        f"{_S}.checkpointLocation: unlike Spark, not the checkpoint: offsets, partial "
        "aggregates and the ledger are kept in PostgreSQL, keyed by queryName "
        f"'{cfg.streaming.query_name}'; this directory holds only local RocksDB working "
        "state, rebuilt from PostgreSQL whenever a worker takes a partition (to start the "
        "query over, use streamproc reset, not rm)"
    ]

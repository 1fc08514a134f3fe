"""Pure SQL layout of the tables streamproc writes (layout 2, see `definition.py`).

No I/O here: this module turns a query's shape into DDL and compares an
existing table's columns with the expected ones, so both are unit-testable.
Identifiers are validated by the config and quoted here as well, so neither a
config nor a record can inject SQL.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

# Re-exported for the sink modules: it lives with the naming rules (config/names.py),
# below every folder that writes SQL, so none of them needs the sinks for it.
from streamproc.config.names import quote_ident as quote_ident
from streamproc.engine import QuerySpec

# Aggregate output types. first/last keep the JSON value as it was (any type);
# the others are numeric in the engine (sum/avg/min/max accept numbers only).
_AGG_SQL_TYPE: Mapping[str, str] = {
    "count": "bigint",
    "sum": "double precision",
    "avg": "double precision",
    "min": "double precision",
    "max": "double precision",
    "first": "jsonb",
    "last": "jsonb",
}

#: Layout 1 kept partial states here (jsonb); layout 2 does not use it.
LEGACY_PARTIALS_TABLE = "streamproc_partials"
STATE_TABLE = "streamproc_state"
LEDGER_TABLE = "streamproc_ledger"
POSITIONS_TABLE = "streamproc_positions"
QUERIES_TABLE = "streamproc_queries"
RUNS_TABLE = "streamproc_runs"
PROGRESS_TABLE = "streamproc_progress"
#: Which batch job (pipelineId) owns which table (streamproc.sinks.postgres_owners).
BATCH_JOBS_TABLE = "streamproc_batch_jobs"
#: Temporary tables (one set per connection) that batches are copied into.
STAGE_STATES = "streamproc_stage_states"
STAGE_KEYS = "streamproc_stage_keys"
STAGE_ROWS = "streamproc_stage_rows"


@dataclass(frozen=True, slots=True)
class Column:
    """One column of a table: its name and SQL type."""

    name: str
    sql_type: str


#: The column holding the JSON type of each group-by value, one letter per column.
GROUP_KEY_TYPES = "group_key_types"


@dataclass(frozen=True, slots=True)
class ResultTableLayout:
    """The result table of a query: columns in order and the unique key."""

    table: str
    group_by: tuple[str, ...]
    windowed: bool
    columns: tuple[Column, ...]

    @property
    def typed(self) -> bool:
        """True when the table has a `group_key_types` column (it has group-by columns)."""
        return bool(self.group_by)

    @property
    def key_columns(self) -> tuple[str, ...]:
        """Group-by columns and their types, then the window bounds when windowed."""
        types = (GROUP_KEY_TYPES,) if self.typed else ()
        return self.group_by + types + (("window_start", "window_end") if self.windowed else ())

    @property
    def value_columns(self) -> tuple[str, ...]:
        """The aggregate output columns, in aggregation order."""
        return tuple(c.name for c in self.columns[len(self.key_columns) :])

    @property
    def constraint_name(self) -> str:
        """The unique key's constraint name (stable, <= 63 chars)."""
        # PostgreSQL cuts names at 63 bytes; cut the table's part first so the
        # constraint's index never takes the (cut) name of the table itself.
        return self.table.split(".")[-1][:59] + "_key"


def result_layout(spec: QuerySpec, table: str) -> ResultTableLayout:
    """The result table layout for a query (STREAMING.md, "Tables").

    Group-by values are stored as text, so a SQL user reads strings as
    strings: a string as it is, a number as its JSON text (`1`, `1.5`), a
    boolean as `true`/`false`, null as NULL. `group_key_types` holds each
    value's JSON type, one letter per group-by column (`s` string, `n`
    number, `b` boolean, `-` null), so `1`, `"1"`, `true` and `"true"` are
    four rows and the unique key never merges groups JSON keeps apart.
    """
    columns = [Column(name, "text") for name in spec.group_by]
    if spec.group_by:
        columns.append(Column(GROUP_KEY_TYPES, "text"))
    windowed = spec.windowed  # a session's bounds are window_start, window_end too
    if windowed:
        columns += [
            Column("window_start", "timestamp with time zone"),
            Column("window_end", "timestamp with time zone"),
        ]
    columns += [Column(agg.output, _AGG_SQL_TYPE[agg.func]) for agg in spec.aggregations]
    return ResultTableLayout(table, spec.group_by, windowed, tuple(columns))


def create_result_table_sql(layout: ResultTableLayout) -> str:
    """DDL for the result table.

    The key is a UNIQUE NULLS NOT DISTINCT constraint rather than a primary
    key: Spark groups null keys like any other value, and a primary key cannot
    hold NULL. ON CONFLICT works against it the same way (PostgreSQL >= 15).
    """
    cols = ",\n  ".join(f"{quote_ident(c.name)} {c.sql_type}" for c in layout.columns)
    key = ", ".join(quote_ident(c) for c in layout.key_columns)
    # fillfactor: rows are updated in place (aggregates are not in the key), and
    # room on the page keeps those updates off the index.
    return (
        f"CREATE TABLE IF NOT EXISTS {quote_ident(layout.table)} (\n  {cols},\n"
        f"  CONSTRAINT {quote_ident(layout.constraint_name)} UNIQUE NULLS NOT DISTINCT ({key})\n"
        ") WITH (fillfactor = 70)"
    )


def layout_differences(
    layout: ResultTableLayout, existing: Sequence[tuple[str, str]], existing_key: Sequence[str]
) -> list[str]:
    """What differs between an existing table and the expected layout.

    Args:
        layout: the expected layout.
        existing: ``(column name, SQL type)`` of the existing table, in order.
        existing_key: the columns of the existing table's primary key or unique
            constraint covering the key (empty when it has none).

    Returns:
        One phrase per difference; empty when the table fits.
    """
    have = dict(existing)
    diffs: list[str] = []
    for column in layout.columns:
        actual = have.get(column.name)
        if actual is None:
            diffs.append(f"missing column {column.name} ({column.sql_type})")
        elif actual != column.sql_type:
            diffs.append(f"column {column.name} is {actual}, expected {column.sql_type}")
    expected_names = {c.name for c in layout.columns}
    diffs += [
        f"unexpected column {name} ({t})" for name, t in existing if name not in expected_names
    ]
    if sorted(existing_key) != sorted(layout.key_columns):
        diffs.append(
            f"unique key is ({', '.join(existing_key) or 'none'}), "
            f"expected ({', '.join(layout.key_columns)})"
        )
    return diffs


def create_state_table_sql() -> str:
    """DDL for the hidden partial-state table: one row per key, window and partition.

    `key` and `state` are the group key and the partial aggregate state in
    marshal format 2 (see `streamproc.sinks.rows.encode_key`): exact, typed,
    and compact; `window_start_ms`/`window_end_ms` are 0 for a non-windowed query.
    `touched_ms` is the max event time of the partial's records, kept only for a
    windowed stateTimeout (so that idle (key, window)s can be found in SQL); a row
    in partition -1 is the tombstone of an expired (key, window).

    One index serves every access: a partition's states (restore), the states
    of closed windows (by window start, per partition), a key's states in
    every partition (merging). Space left in each page (fillfactor) lets an
    update of a state stay on its page without touching the index.
    """
    t = quote_ident(STATE_TABLE)
    return f"""
CREATE TABLE IF NOT EXISTS {t} (
  query text NOT NULL,
  partition integer NOT NULL,
  window_start_ms bigint NOT NULL,
  window_end_ms bigint NOT NULL,
  key bytea NOT NULL,
  state bytea NOT NULL,
  touched_ms bigint,
  PRIMARY KEY (query, partition, window_start_ms, key)
) WITH (fillfactor = 70);
"""


#: Added to `streamproc_state` by streamproc 0.x for windowed stateTimeout; a table
#: made before it gets it when a checkpoint opens (`ALTER TABLE ... ADD COLUMN`).
STATE_TOUCHED_COLUMN = "touched_ms"
#: The partition under which the tombstone of an expired (key, window) is kept (one
#: per (key, window), whichever partitions held its partials).
TOMBSTONE_PARTITION = -1


def create_ledger_table_sql() -> str:
    """DDL for the ledger: one readable row per committed batch and partition (history)."""
    return f"""
CREATE TABLE IF NOT EXISTS {quote_ident(LEDGER_TABLE)} (
  query text NOT NULL,
  topic text NOT NULL,
  partition integer NOT NULL,
  start_offset bigint NOT NULL,
  next_offset bigint NOT NULL,
  batch_id text NOT NULL,
  records integer NOT NULL,
  aggregated integer NOT NULL,
  late integer NOT NULL,
  bad integer NOT NULL,
  filtered integer NOT NULL,
  max_event_time timestamp with time zone,
  watermark timestamp with time zone,
  committed_at timestamp with time zone NOT NULL DEFAULT now(),
  dead_lettered integer NOT NULL DEFAULT 0,
  error text,
  PRIMARY KEY (query, topic, partition, start_offset)
)"""


def create_positions_table_sql() -> str:
    """DDL for the positions: where each partition of a query resumes (one row each).

    Updated in every commit; the ledger is its history, and each restore
    checks that the two agree. `last_record` is a digest of the last record
    committed, to tell a re-created topic from the one the query read.
    """
    return f"""
CREATE TABLE IF NOT EXISTS {quote_ident(POSITIONS_TABLE)} (
  query text NOT NULL,
  partition integer NOT NULL,
  topic text NOT NULL,
  next_offset bigint NOT NULL,
  batch_id text NOT NULL,
  max_event_time_ms bigint,
  watermark_ms bigint,
  last_record bytea,
  committed_at timestamp with time zone NOT NULL DEFAULT now(),
  PRIMARY KEY (query, partition)
)"""


def create_queries_table_sql() -> str:
    """DDL for the query registry: each query's definition, result table and W.

    A result table belongs to one query (unique); `global_watermark_ms` is
    the last committed global watermark, which never goes back.
    """
    return f"""
CREATE TABLE IF NOT EXISTS {quote_ident(QUERIES_TABLE)} (
  query text PRIMARY KEY,
  layout integer NOT NULL,
  definition jsonb NOT NULL,
  result_table text UNIQUE,
  global_watermark_ms bigint,
  created_at timestamp with time zone NOT NULL DEFAULT now(),
  updated_at timestamp with time zone NOT NULL DEFAULT now(),
  {QUERIES_EXTRA_COLUMNS}
)"""


#: Columns of the query registry added after its first layout (`ensure_registry_columns`):
#: `incarnation` changes whenever the query is (re-)registered, so that a worker can tell
#: that its checkpoint was reset or re-made under it; `late_table` and `dlq_table` are
#: the side tables it writes rows to (for `reset --drop-results` by name); `settings`
#: are the options that change which records are aggregated (the start-up line about
#: changes since the last run).
QUERIES_EXTRA = (
    ("incarnation", "uuid"),
    ("late_table", "text"),
    ("dlq_table", "text"),
    ("settings", "jsonb"),
)
QUERIES_EXTRA_COLUMNS = ",\n  ".join(f"{name} {kind}" for name, kind in QUERIES_EXTRA)


def create_runs_table_sql() -> str:
    """DDL for bounded runs (once, availablenow): the end offsets every worker stops at."""
    return f"""
CREATE TABLE IF NOT EXISTS {quote_ident(RUNS_TABLE)} (
  query text NOT NULL,
  run_id integer NOT NULL,
  trigger text NOT NULL,
  end_offsets bigint[] NOT NULL,
  status text NOT NULL DEFAULT 'running',
  started_at timestamp with time zone NOT NULL DEFAULT now(),
  finished_at timestamp with time zone,
  PRIMARY KEY (query, run_id)
)"""


def create_progress_table_sql() -> str:
    """DDL for the progress table: one row per commit, a query's newest ones (progress_rows.py).

    `seq` numbers a query's commits (1, 2, ...: commits of a query are
    serialised by its lock), so the newest rows are one range of the primary
    key and pruning the oldest is one index range too. `batch_id` is the
    worker's batch number; `sources` holds each partition's span with its
    ledger batch id. Event times and the watermark are event time;
    `committed_at` is the transaction's start (as in the ledger), wall time.
    """
    return f"""
CREATE TABLE IF NOT EXISTS {quote_ident(PROGRESS_TABLE)} (
  query text NOT NULL,
  seq bigint NOT NULL,
  committed_at timestamp with time zone NOT NULL DEFAULT now(),
  pipeline text NOT NULL,
  batch_id integer,
  worker text NOT NULL,
  partitions integer NOT NULL,
  input_rows integer NOT NULL,
  aggregated integer NOT NULL,
  late integer NOT NULL,
  bad integer NOT NULL,
  filtered integer NOT NULL,
  dead_lettered integer NOT NULL,
  sink_rows integer NOT NULL,
  state_rows_updated integer NOT NULL,
  state_rows_total bigint NOT NULL,
  min_event_time timestamp with time zone,
  max_event_time timestamp with time zone,
  watermark timestamp with time zone,
  input_rows_per_second double precision,
  processed_rows_per_second double precision,
  duration_ms jsonb NOT NULL,
  sources jsonb NOT NULL,
  breaker text NOT NULL,
  breaker_opened integer NOT NULL,
  retries integer NOT NULL,
  PRIMARY KEY (query, seq)
)"""


#: The columns naming where a side table's record was read; unique together
#: (`_SOURCE_KEY`), so that a replay never doubles a row.
_SOURCE_COLUMNS = """
  query text NOT NULL,
  source_topic text NOT NULL,
  source_partition integer NOT NULL,
  source_offset bigint NOT NULL,"""
_SOURCE_KEY = "UNIQUE (query, source_topic, source_partition, source_offset)"


def create_late_table_sql(table: str) -> str:
    """DDL for a separatestream late-data side table (queries may share one)."""
    return f"""
CREATE TABLE IF NOT EXISTS {quote_ident(table)} ({_SOURCE_COLUMNS}
  event_time timestamp with time zone,
  watermark timestamp with time zone,
  reason text NOT NULL,
  detected_at timestamp with time zone NOT NULL DEFAULT now(),
  record jsonb NOT NULL,
  {_SOURCE_KEY}
)"""


def dead_letter_table_sql(table: str) -> str:
    """DDL for a dead-letter table of dlqType postgresql (queries and batch jobs may share one).

    The record as it was read (key and value bytes, NULL when absent), why it
    is dead, the sink's error for a record the sink refused, and the batch
    (ledger row, or batch job) that dead-lettered it.
    """
    return f"""
CREATE TABLE IF NOT EXISTS {quote_ident(table)} ({_SOURCE_COLUMNS}
  record_key bytea,
  record_value bytea,
  reason text NOT NULL,
  error text,
  batch_id text NOT NULL,
  dead_lettered_at timestamp with time zone NOT NULL DEFAULT now(),
  {_SOURCE_KEY}
)"""


def create_stage_tables_sql() -> str:
    """DDL for the checkpoint's temporary staging tables (per connection, emptied at commit).

    A batch's partial states and keys are copied into them with binary COPY,
    then applied in one statement each.
    """
    return f"""
CREATE TEMPORARY TABLE IF NOT EXISTS {STAGE_STATES} (
  partition integer, key bytea, window_start_ms bigint, window_end_ms bigint, state bytea,
  touched_ms bigint
) ON COMMIT DELETE ROWS;
CREATE TEMPORARY TABLE IF NOT EXISTS {STAGE_KEYS} (
  partition integer, key bytea, window_start_ms bigint
) ON COMMIT DELETE ROWS;
"""


def create_stage_rows_sql(layout: ResultTableLayout) -> str:
    """DDL for the temporary table result rows are copied into before the upsert.

    Window bounds travel as epoch milliseconds (bigint) and become timestamps
    in the upsert.
    """
    columns = [f"k{i} text" for i in range(len(layout.group_by))]
    if layout.typed:
        columns.append("types text")
    if layout.windowed:
        columns += ["ws bigint", "we bigint"]
    values = layout.columns[len(layout.columns) - len(layout.value_columns) :]
    columns += [f"v{i} {c.sql_type}" for i, c in enumerate(values)]
    return (
        f"CREATE TEMPORARY TABLE IF NOT EXISTS {STAGE_ROWS} ({', '.join(columns)}) "
        "ON COMMIT DELETE ROWS"
    )

"""The PL/pgSQL text of a query's commit function (`postgres_fastpath`).

The function runs `postgres_commit.execute`'s steps in the same order and under
the same locks: the closing lock shared, positions FOR UPDATE (a stale batch
raises SPSTL with its partitions), the incarnation (SPRST), states, evictions,
rows, late rows and dead letters, the closing in place when the closing lock can
be taken (else `pending`, for a short transaction after), expiry, and the
progress row under the progress lock.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from streamproc.config.names import quote_literal
from streamproc.sinks.layout import (
    GROUP_KEY_TYPES,
    LEDGER_TABLE,
    POSITIONS_TABLE,
    PROGRESS_TABLE,
    QUERIES_TABLE,
    STATE_TABLE,
    TOMBSTONE_PARTITION,
    quote_ident,
)
from streamproc.sinks.postgres_table import session_row_match

if TYPE_CHECKING:
    from streamproc.sinks.postgres_fastpath import FastPath

#: SQLSTATEs the function raises (class SP: streamproc's own).
STALE_STATE = "SPSTL"
RESET_STATE = "SPRST"
LOCAL_W_STATE = "SPLWM"
CLOSING_STATE = "SPCLO"
CLOSING_TAKEN_STATE = "SPCLT"

FUNCTION = "pg_temp.streamproc_commit"


def commit_function_sql(fast: FastPath) -> str:
    """CREATE OR REPLACE FUNCTION pg_temp.streamproc_commit(...) for one query."""
    layout = fast.layout
    cols = fast.row_columns()
    row_params = ", ".join(f"r_{name} {kind}[]" for name, kind in cols)
    unnest = ", ".join(f"r_{name}" for name, _ in cols)
    alias = ", ".join(name for name, _ in cols)
    selected = [f"r.k{i}" for i in range(len(layout.group_by))]
    if layout.typed:
        selected.append("r.types")
    if layout.windowed:
        selected += [
            "timestamptz 'epoch' + r.ws * interval '1 millisecond'",
            "timestamptz 'epoch' + r.we * interval '1 millisecond'",
        ]
    selected += [f"r.v{i}" for i in range(len(layout.value_columns))]
    names = ", ".join(quote_ident(c.name) for c in layout.columns)
    conflict = ", ".join(quote_ident(c) for c in layout.key_columns)
    update = (
        "DO UPDATE SET "
        + ", ".join(f"{quote_ident(c)} = EXCLUDED.{quote_ident(c)}" for c in layout.value_columns)
        if layout.value_columns
        else "DO NOTHING"
    )
    table = quote_ident(layout.table)
    rows_from = f"FROM unnest({unnest}) AS r({alias})"
    upsert_rows = (
        f"INSERT INTO {table} ({names}) SELECT {', '.join(selected)} {rows_from} "
        f"ON CONFLICT ({conflict}) {update}"
    )
    insert_rows = (
        f"INSERT INTO {table} ({names}) SELECT {', '.join(selected)} {rows_from} "
        f"ON CONFLICT ({conflict}) DO NOTHING"
    )
    claim_rows = _claim_rows_sql(fast, table, names, conflict, selected, unnest, alias)
    q, topic = quote_literal(fast.query), quote_literal(fast.topic)
    windowed = "true" if fast.spec.window is not None else "false"
    # A state of a closed window or session makes a batch stale (`behind_watermark`).
    ends_checked = "true" if fast.spec.windowed else "false"
    sessions = fast.spec.session is not None
    # A session batch that closes nothing (a dead letter's) leaves W to the next one.
    holds_w = "p_closing = 'none'" if sessions else "false"
    size = fast.spec.window.size_ms if fast.spec.window is not None else 0
    expires = fast.spec.window is not None and fast.spec.state_timeout_ms is not None
    positions, state = quote_ident(POSITIONS_TABLE), quote_ident(STATE_TABLE)
    queries, ledger = quote_ident(QUERIES_TABLE), quote_ident(LEDGER_TABLE)
    progress = quote_ident(PROGRESS_TABLE)
    late = (
        f"""INSERT INTO {quote_ident(fast.late_table)}
              (query, source_topic, source_partition, source_offset, event_time, watermark,
               reason, record)
            SELECT {q}, {topic}, l.partition, l.offset_, l.event_time, l.watermark, l.reason,
                   l.record
            FROM jsonb_to_recordset(p_late) AS l(partition int, offset_ bigint,
              event_time timestamptz, watermark timestamptz, reason text, record jsonb)
            ON CONFLICT (query, source_topic, source_partition, source_offset) DO NOTHING;"""
        if fast.late_table
        else ""
    )
    dead = (
        f"""INSERT INTO {quote_ident(fast.dlq_table)}
              (query, source_topic, source_partition, source_offset, record_key,
               record_value, reason, error, batch_id)
            SELECT {q}, coalesce(d.source, {topic}), d.partition, d.offset_,
                   decode(d.key, 'base64'), decode(d.value, 'base64'), d.reason, d.error,
                   d.batch_id
            FROM jsonb_to_recordset(p_dead) AS d(partition int, offset_ bigint, key text,
              value text, reason text, error text, source text, batch_id text)
            ON CONFLICT (query, source_topic, source_partition, source_offset) DO NOTHING;"""
        if fast.dlq_table
        else ""
    )
    tombstone_check = (
        f"""IF EXISTS (SELECT 1 FROM unnest(s_key, s_ws) AS t(k, ws)
                       JOIN {state} s ON s.query = {q}
                         AND s.partition = {TOMBSTONE_PARTITION}
                         AND s.window_start_ms = t.ws AND s.key = t.k) THEN
              RAISE EXCEPTION USING ERRCODE = '{STALE_STATE}',
                MESSAGE = array_to_string(p_carried_parts, ',');
            END IF;"""
        if expires
        else ""
    )
    expiry = (
        f"""DELETE FROM {state} WHERE query = {q} AND partition = {TOMBSTONE_PARTITION}
              AND window_start_ms <= v_new_w - {size};
            GET DIAGNOSTICS v_n = ROW_COUNT; v_deleted := v_deleted + v_n;
            IF x_key IS NOT NULL AND cardinality(x_key) > 0 THEN
              DELETE FROM {state} s USING unnest(x_key, x_ws) AS x(k, ws)
              WHERE s.query = {q} AND s.partition >= 0
                AND s.window_start_ms = x.ws AND s.key = x.k;
              GET DIAGNOSTICS v_n = ROW_COUNT; v_deleted := v_deleted + v_n;
              INSERT INTO {state} (query, partition, key, window_start_ms, window_end_ms, state)
              SELECT {q}, {TOMBSTONE_PARTITION}, x.k, x.ws, x.ws + {size}, p_tombstone
              FROM unnest(x_key, x_ws) AS x(k, ws) ON CONFLICT DO NOTHING;
              GET DIAGNOSTICS v_n = ROW_COUNT; v_inserted := v_inserted + v_n;
            END IF;"""
        if expires
        else ""
    )
    return f"""
CREATE OR REPLACE FUNCTION {FUNCTION}(
  p_incarnation text, p_carried jsonb, p_carried_parts int[], p_basis jsonb,
  s_part int[], s_key bytea[], s_ws bigint[], s_we bigint[], s_state bytea[],
  s_touched bigint[], e_part int[], e_key bytea[], e_ws bigint[],
  p_rows_kind text, {row_params},
  p_late jsonb, p_dead jsonb, p_closes_locally boolean, p_engine_w bigint,
  p_topic_partitions int, p_idle_ms bigint, p_closing text, x_key bytea[], x_ws bigint[],
  p_tombstone bytea, p_progress jsonb, p_keep int,
  p_resume boolean, p_written int, p_inserted bigint, p_sessions jsonb,
  OUT stale int[], OUT written int, OUT closed int, OUT watermark bigint, OUT total bigint,
  OUT pending boolean, OUT held_ms float8, OUT existing jsonb, OUT inserted_states bigint)
LANGUAGE plpgsql AS $fn$
DECLARE
  v_started timestamptz := clock_timestamp();
  v_inc text; v_w bigint; v_new_w bigint; v_cand bigint; v_n bigint; v_held boolean;
  v_inserted bigint := 0; v_deleted bigint := 0; v_placeholders int[];
  v_last_seq bigint; v_last_total bigint; v_rows int; v_count int; v_null int;
  v_held_at timestamptz; v_constraint text; v_table text;
BEGIN
  written := p_written; closed := 0; pending := false; stale := '{{}}';
  v_inserted := p_inserted;
  IF p_resume THEN
    -- The second call of a claim that found rows in the table: the positions are
    -- locked and the states written by the first; the merged rows follow.
    SELECT global_watermark_ms INTO v_w FROM {queries} WHERE query = {q};
  ELSE
  PERFORM pg_advisory_xact_lock_shared(hashtext({quote_literal("streamproc:" + fast.query)}));
  WITH ins AS (
INSERT INTO {positions} (query, partition, topic, next_offset, batch_id)
SELECT {q}, c.partition, {topic}, c.start_offset, ''
FROM jsonb_to_recordset(p_carried) AS c(partition int, start_offset bigint)
ORDER BY c.partition
ON CONFLICT (query, partition) DO NOTHING RETURNING partition)
  SELECT coalesce(array_agg(partition), '{{}}') INTO v_placeholders FROM ins;
  IF p_basis IS NOT NULL THEN
PERFORM 1 FROM {positions} WHERE query = {q} ORDER BY partition FOR UPDATE;
SELECT coalesce(array_agg(x.partition ORDER BY x.partition), '{{}}') INTO stale FROM (
  SELECT coalesce(b.partition, l.partition) AS partition
  FROM (SELECT partition, next_offset FROM {positions}
        WHERE query = {q} AND NOT partition = ANY(v_placeholders)) l
  FULL JOIN jsonb_to_recordset(p_basis) AS b(partition int, next_offset bigint)
    ON b.partition = l.partition
  WHERE l.next_offset IS DISTINCT FROM b.next_offset) x;
  ELSE
PERFORM 1 FROM {positions} WHERE query = {q} AND partition = ANY(p_carried_parts)
  ORDER BY partition FOR UPDATE;
SELECT coalesce(array_agg(c.partition ORDER BY c.partition), '{{}}') INTO stale
FROM jsonb_to_recordset(p_carried) AS c(partition int, start_offset bigint)
JOIN {positions} p ON p.query = {q} AND p.partition = c.partition
WHERE NOT c.partition = ANY(v_placeholders) AND p.next_offset <> c.start_offset;
  END IF;
  IF cardinality(stale) > 0 THEN
RAISE EXCEPTION USING ERRCODE = '{STALE_STATE}', MESSAGE = array_to_string(stale, ',');
  END IF;
  SELECT global_watermark_ms, incarnation::text INTO v_w, v_inc FROM {queries} WHERE query = {q};
  IF NOT FOUND OR v_inc IS DISTINCT FROM p_incarnation THEN
RAISE EXCEPTION USING ERRCODE = '{RESET_STATE}', MESSAGE = 'reset';
  END IF;
  IF {ends_checked} AND v_w IS NOT NULL
 AND EXISTS (SELECT 1 FROM unnest(s_we) AS we WHERE we <= v_w) THEN
RAISE EXCEPTION USING ERRCODE = '{STALE_STATE}',
  MESSAGE = array_to_string(p_carried_parts, ',');
  END IF;
  {tombstone_check}
  WITH up AS (
INSERT INTO {state} (query, partition, key, window_start_ms, window_end_ms, state, touched_ms)
SELECT {q}, t.p, t.k, t.ws, t.we, t.s, t.touched
FROM unnest(s_part, s_key, s_ws, s_we, s_state, s_touched) AS t(p, k, ws, we, s, touched)
ON CONFLICT (query, partition, window_start_ms, key)
DO UPDATE SET window_end_ms = EXCLUDED.window_end_ms, state = EXCLUDED.state,
  touched_ms = EXCLUDED.touched_ms
RETURNING xmax = 0 AS inserted)
  SELECT count(*) FILTER (WHERE inserted) INTO v_n FROM up;
  v_inserted := v_inserted + v_n;
  END IF;
  IF p_rows_kind = 'replace' THEN
{_delete_session_rows_sql(fast, table) if sessions else ""}
{upsert_rows};
GET DIAGNOSTICS v_rows = ROW_COUNT;
written := written + v_rows;
  ELSIF p_rows_kind = 'upsert' THEN
{upsert_rows};
GET DIAGNOSTICS v_rows = ROW_COUNT;
written := written + v_rows;
  ELSIF p_rows_kind = 'claim' THEN
{claim_rows}
written := written + cardinality(r_{cols[0][0]});
IF existing IS NOT NULL THEN
  -- Rows another worker may have contributed to: merged again by the caller
  -- from every partition's states, then written by a second call (p_resume).
  inserted_states := v_inserted;
  held_ms := 0;
  RETURN;
END IF;
  END IF;
  {late}
  {dead}
  INSERT INTO {ledger} (query, topic, partition, start_offset, next_offset, batch_id, records,
 aggregated, late, bad, filtered, max_event_time, watermark, dead_lettered, error)
  SELECT {q}, {topic}, c.partition, c.start_offset, c.next_offset, c.batch_id, c.records,
 c.aggregated, c.late, c.bad, c.filtered, c.max_event_time, c.watermark, c.dead_lettered,
 c.error
  FROM jsonb_to_recordset(p_carried) AS c(partition int, start_offset bigint, next_offset bigint,
 batch_id text, records int, aggregated int, late int, bad int, filtered int,
 max_event_time timestamptz, watermark timestamptz, dead_lettered int, error text);
  UPDATE {positions} p SET next_offset = c.next_offset, batch_id = c.batch_id,
 max_event_time_ms = c.max_event_time_ms, watermark_ms = c.watermark_ms,
 last_record = decode(c.last_record, 'base64'), committed_at = now(), topic = {topic}
  FROM jsonb_to_recordset(p_carried) AS c(partition int, next_offset bigint, batch_id text,
 max_event_time_ms bigint, watermark_ms bigint, last_record text)
  WHERE p.query = {q} AND p.partition = c.partition;
  -- W, and closing when it moves (alone: no other batch of the query in flight)
  SELECT count(*), count(*) FILTER (WHERE watermark_ms IS NULL
       AND (p_idle_ms IS NULL OR extract(epoch from now() - committed_at) * 1000 <= p_idle_ms)),
     min(watermark_ms) FILTER (WHERE p_idle_ms IS NULL
       OR extract(epoch from now() - committed_at) * 1000 <= p_idle_ms)
INTO v_count, v_null, v_cand FROM {positions} WHERE query = {q};
  IF v_null > 0 OR (v_count < p_topic_partitions AND p_idle_ms IS NULL) THEN
v_cand := NULL;
  END IF;
  v_new_w := v_w;
  IF ((v_cand IS NOT NULL AND (v_w IS NULL OR v_cand > v_w)) OR p_closes_locally)
 AND NOT {holds_w} THEN
v_held := pg_try_advisory_xact_lock(hashtext({quote_literal("streamproc:" + fast.query)}));
IF v_held THEN
  v_held_at := clock_timestamp();
  IF v_cand IS NOT NULL AND (v_w IS NULL OR v_cand > v_w) THEN
    UPDATE {queries} SET global_watermark_ms = v_cand WHERE query = {q};
    v_new_w := v_cand;
  END IF;
  IF p_closes_locally AND v_new_w IS DISTINCT FROM p_engine_w THEN
    RAISE EXCEPTION USING ERRCODE = '{LOCAL_W_STATE}',
      MESSAGE = coalesce(p_engine_w::text, 'none') || ',' || coalesce(v_new_w::text, 'none');
  END IF;
  IF v_new_w IS NOT NULL AND {windowed} THEN
    IF p_closing = 'append' THEN
      DELETE FROM {state} WHERE query = {q} AND partition >= 0
        AND window_start_ms <= v_new_w - {size};
      GET DIAGNOSTICS v_n = ROW_COUNT; v_deleted := v_deleted + v_n;
      IF p_rows_kind = 'close' THEN
        {insert_closing_rows(insert_rows, cols[0][0])}
        closed := closed + v_rows;
      END IF;
    ELSIF p_closing = 'evict' THEN
      DELETE FROM {state} WHERE query = {q} AND partition >= 0
        AND window_start_ms <= v_new_w - {size};
      GET DIAGNOSTICS v_n = ROW_COUNT; v_deleted := v_deleted + v_n;
      closed := closed + v_n;
    END IF;
    {expiry}
  END IF;
  {_close_sessions_sql(fast, insert_rows, cols[0][0]) if sessions else ""}
ELSIF p_closes_locally THEN
  RAISE EXCEPTION USING ERRCODE = '{STALE_STATE}',
    MESSAGE = array_to_string(p_carried_parts, ',');
ELSE
  pending := {windowed};
END IF;
  END IF;
  watermark := v_new_w;
  IF p_closing <> 'append' AND e_part IS NOT NULL AND cardinality(e_part) > 0 THEN
DELETE FROM {state} s USING unnest(e_part, e_key, e_ws) AS e(p, k, ws)
WHERE s.query = {q} AND s.partition = e.p AND s.key = e.k AND s.window_start_ms = e.ws;
GET DIAGNOSTICS v_n = ROW_COUNT; v_deleted := v_deleted + v_n;
  END IF;
  -- the progress row, alone until COMMIT: its seq and state total carry on
  PERFORM pg_advisory_xact_lock(hashtext({quote_literal("streamproc:progress:" + fast.query)}));
  v_held_at := coalesce(v_held_at, clock_timestamp());
  SELECT seq, state_rows_total INTO v_last_seq, v_last_total FROM {progress}
WHERE query = {q} ORDER BY seq DESC LIMIT 1;
  IF v_last_total IS NULL THEN
SELECT count(*) INTO total FROM {state} WHERE query = {q};
  ELSE
total := v_last_total + v_inserted - v_deleted;
  END IF;
  INSERT INTO {progress}
(query, seq, pipeline, batch_id, worker, partitions, input_rows, aggregated, late, bad,
 filtered, dead_lettered, sink_rows, state_rows_updated, state_rows_total,
 min_event_time, max_event_time, watermark, input_rows_per_second,
 processed_rows_per_second, duration_ms, sources, breaker, breaker_opened, retries)
  SELECT {q}, coalesce(v_last_seq, 0) + 1, g.pipeline, g.batch_id, g.worker, g.partitions,
 g.input_rows, g.aggregated, g.late, g.bad, g.filtered, g.dead_lettered, written,
 g.state_rows_updated, total, g.min_event_time, g.max_event_time,
 timestamptz 'epoch' + v_new_w * interval '1 millisecond', g.input_rows_per_second,
 g.processed_rows_per_second,
 g.duration_ms || jsonb_build_object('checkpoint',
   coalesce((g.duration_ms->>'checkpoint')::float8, 0)
   + extract(epoch from clock_timestamp() - v_started) * 1000),
 g.sources, g.breaker, g.breaker_opened, g.retries
  FROM jsonb_to_record(p_progress) AS g(pipeline text, batch_id int, worker text, partitions int,
 input_rows int, aggregated int, late int, bad int, filtered int, dead_lettered int,
 state_rows_updated int, min_event_time timestamptz, max_event_time timestamptz,
 input_rows_per_second float8, processed_rows_per_second float8, duration_ms jsonb,
 sources jsonb, breaker text, breaker_opened int, retries int);
  DELETE FROM {progress} WHERE query = {q} AND seq <= coalesce(v_last_seq, 0) + 1 - p_keep;
  held_ms := extract(epoch from clock_timestamp() - v_held_at) * 1000;
END
$fn$"""


def insert_closing_rows(insert_rows: str, first_column: str) -> str:
    """The closing rows inserted once each: a refusal raised as SPCLO (with its cause),
    a row already there as SPCLT (how many); `written` counts them, `v_rows` holds it."""
    return f"""BEGIN
          {insert_rows};
        EXCEPTION WHEN OTHERS THEN
          GET STACKED DIAGNOSTICS v_constraint = CONSTRAINT_NAME, v_table = TABLE_NAME;
          RAISE EXCEPTION USING ERRCODE = '{CLOSING_STATE}', MESSAGE = SQLSTATE || '|'
            || coalesce(v_constraint, '') || '|' || coalesce(v_table, '') || '|' || SQLERRM;
        END;
        GET DIAGNOSTICS v_rows = ROW_COUNT;
        IF v_rows < cardinality(r_{first_column}) THEN
          RAISE EXCEPTION USING ERRCODE = '{CLOSING_TAKEN_STATE}',
            MESSAGE = (cardinality(r_{first_column}) - v_rows)::text;
        END IF;
        written := written + v_rows;"""


def _delete_session_rows_sql(fast: FastPath, table: str) -> str:
    """Rows of sessions that moved or merged deleted before the batch's are upserted.

    `p_sessions->'deleted'` holds one array per row: its group values as stored (text,
    null for null), their types when the table has them, and the session's bounds in
    ms. Matched as `PostgresTableSink.delete_rows` matches them: by index, and keys
    with a null group value apart.
    """
    layout = fast.layout
    at = len(layout.group_by)
    types = f"d.x->>{at}"
    at += int(layout.typed)
    match = session_row_match(
        layout, lambda i: f"(d.x->>{i})", types, f"d.x->>{at}", f"d.x->>{at + 1}"
    )
    deleted = "jsonb_array_elements(p_sessions->'deleted') AS d(x)"
    return f"""IF jsonb_array_length(p_sessions->'deleted') > 0 THEN
  DELETE FROM {table} t USING {deleted} WHERE {match.equal};
  IF EXISTS (SELECT 1 FROM {deleted} WHERE {match.has_null}) THEN
    DELETE FROM {table} t USING {deleted} WHERE {match.has_null} AND {match.null_safe};
  END IF;
END IF;"""


def _close_sessions_sql(fast: FastPath, insert_rows: str, first_column: str) -> str:
    """What `postgres_sessions.close_sessions` does for a worker that closes its sessions:
    the closed sessions' fences kept (append, update), those W passed by a gap deleted,
    and in append mode the closed sessions' rows inserted once."""
    assert fast.spec.session is not None
    gap = fast.spec.session.gap_ms
    q = quote_literal(fast.query)
    state = quote_ident(STATE_TABLE)
    return f"""IF p_closing = 'sessions' THEN
    IF (p_sessions->>'fences')::boolean
       AND jsonb_array_length(p_sessions->'closed') > 0 THEN
      INSERT INTO {state} (query, partition, key, window_start_ms, window_end_ms, state)
      SELECT {q}, {TOMBSTONE_PARTITION}, decode(f.x->>0, 'base64'), (f.x->>1)::bigint,
             (f.x->>2)::bigint,
             decode(p_sessions->>'fence', 'base64')
      FROM jsonb_array_elements(p_sessions->'closed') AS f(x)
      ON CONFLICT (query, partition, window_start_ms, key)
      DO UPDATE SET window_end_ms = EXCLUDED.window_end_ms;
      GET DIAGNOSTICS v_n = ROW_COUNT; v_inserted := v_inserted + v_n;
    END IF;
    IF v_new_w IS NOT NULL THEN
      DELETE FROM {state} WHERE query = {q} AND partition = {TOMBSTONE_PARTITION}
        AND window_end_ms <= v_new_w - {gap};
      GET DIAGNOSTICS v_n = ROW_COUNT; v_deleted := v_deleted + v_n;
    END IF;
    IF p_rows_kind = 'close' THEN
      {insert_closing_rows(insert_rows, first_column)}
    END IF;
    closed := closed + jsonb_array_length(p_sessions->'closed');
  END IF;"""


def _claim_rows_sql(
    fast: FastPath,
    table: str,
    names: str,
    conflict: str,
    selected: list[str],
    unnest: str,
    alias: str,
) -> str:
    """The worker's own rows inserted in key order, those in the table already locked.

    Sets `existing` to the keys (as the staged rows have them: group values, their
    types, the window's start in ms) of the rows that were in the table, as a JSON
    array, NULL when none. EXCEPT finds them by hashing or sorting: an anti-join was
    planned as a nested loop (a function's plan takes an array for 10 elements), rows x
    rows for a batch of 70,000.
    """
    layout = fast.layout
    keys = [f"r.k{i}" for i in range(len(layout.group_by))]
    keys += ["r.types"] if layout.typed else []
    keys += ["r.ws"] if layout.windowed else []
    if not layout.value_columns:
        # Nothing to merge again: a row in the table already is the row.
        return (
            f"INSERT INTO {table} ({names}) SELECT {', '.join(selected)} "
            f"FROM unnest({unnest}) AS r({alias}) ORDER BY {', '.join(keys)} "
            f"ON CONFLICT ({conflict}) DO NOTHING;"
        )
    first = quote_ident(layout.value_columns[0])
    returned = [quote_ident(c) for c in layout.group_by]
    returned += [quote_ident(GROUP_KEY_TYPES)] if layout.typed else []
    as_staged = list(returned)
    if layout.windowed:
        returned.append("window_start")
        as_staged.append("(extract(epoch FROM window_start) * 1000)::bigint")
    columns = ", ".join(f"c{n}" for n in range(len(keys)))
    return f"""WITH i AS (
  INSERT INTO {table} ({names}) SELECT {", ".join(selected)}
  FROM unnest({unnest}) AS r({alias}) ORDER BY {", ".join(keys)}
  ON CONFLICT ({conflict}) DO UPDATE SET {first} = EXCLUDED.{first} WHERE false
  RETURNING {", ".join(returned)})
SELECT jsonb_agg(jsonb_build_array({columns})) INTO existing FROM (
  SELECT {", ".join(keys)} FROM unnest({unnest}) AS r({alias})
  EXCEPT ALL
  SELECT {", ".join(as_staged)} FROM i) AS e({columns});"""

"""Pure SQL layout: DDL shape, identifier quoting, the differences reported, row encoding."""

from __future__ import annotations

from streamproc.engine import AggSpec, QuerySpec, ResultRow, WindowSpec
from streamproc.sinks.layout import (
    create_result_table_sql,
    layout_differences,
    quote_ident,
    result_layout,
)
from streamproc.sinks.postgres_table import (
    PostgresTableSink,
    encode_one_key_windowed,
    encode_rows,
)

SPEC = QuerySpec(
    group_by=("user_id", "region"),
    aggregations=(
        AggSpec("n", None, "count"),
        AggSpec("v_sum", "v", "sum"),
        AggSpec("v_last", "v", "last"),
    ),
    output_mode="update",
    event_time_column="ts",
    delay_ms=1_000,
    window=WindowSpec(60_000, 60_000),
)


def test_result_layout_columns_and_key() -> None:
    layout = result_layout(SPEC, "analytics.totals")
    assert [(c.name, c.sql_type) for c in layout.columns] == [
        ("user_id", "text"),
        ("region", "text"),
        ("group_key_types", "text"),
        ("window_start", "timestamp with time zone"),
        ("window_end", "timestamp with time zone"),
        ("n", "bigint"),
        ("v_sum", "double precision"),
        ("v_last", "jsonb"),
    ]
    key = ("user_id", "region", "group_key_types", "window_start", "window_end")
    assert layout.key_columns == key
    assert layout.value_columns == ("n", "v_sum", "v_last")
    ddl = create_result_table_sql(layout)
    assert ddl.startswith('CREATE TABLE IF NOT EXISTS "analytics"."totals" (')
    quoted = ", ".join(f'"{c}"' for c in key)
    assert f"UNIQUE NULLS NOT DISTINCT ({quoted})" in ddl


def test_non_windowed_layout_has_no_window_columns() -> None:
    spec = QuerySpec(("k",), (AggSpec("n", None, "count"),), "complete")
    layout = result_layout(spec, "t")
    assert [c.name for c in layout.columns] == ["k", "group_key_types", "n"]
    assert layout.key_columns == ("k", "group_key_types")


def test_quote_ident_doubles_quotes_so_nothing_escapes() -> None:
    assert quote_ident('x"; DROP TABLE y; --') == '"x""; DROP TABLE y; --"'
    assert quote_ident("s.t") == '"s"."t"'


def test_layout_differences_name_each_difference() -> None:
    layout = result_layout(SPEC, "t")
    existing = [
        ("user_id", "integer"),
        ("group_key_types", "text"),
        ("window_start", "timestamp with time zone"),
        ("window_end", "timestamp with time zone"),
        ("n", "bigint"),
        ("v_sum", "double precision"),
        ("v_last", "jsonb"),
        ("extra", "text"),
    ]
    assert layout_differences(layout, existing, ["user_id", "window_start", "window_end"]) == [
        "column user_id is integer, expected text",
        "missing column region (text)",
        "unexpected column extra (text)",
        "unique key is (user_id, window_start, window_end), "
        "expected (user_id, region, group_key_types, window_start, window_end)",
    ]
    fitting = [(c.name, c.sql_type) for c in layout.columns]
    assert layout_differences(layout, fitting, list(layout.key_columns)) == []


def test_constraint_name_never_takes_the_cut_name_of_a_long_table() -> None:
    # PostgreSQL cuts identifiers at 63 bytes: "<table>_key" cut there would be
    # the table's own (cut) name and collide with it.
    layout = result_layout(SPEC, "t" * 70)
    assert layout.constraint_name == "t" * 59 + "_key"
    assert layout.constraint_name != layout.table[:63]


def test_fast_row_encoding_equals_the_general_one_for_every_json_type() -> None:
    spec = QuerySpec(
        group_by=("user_id",),
        aggregations=(AggSpec("n", None, "count"), AggSpec("v_max", "v", "max")),
        output_mode="update",
        event_time_column="ts",
        delay_ms=1_000,
        window=WindowSpec(10_000, 10_000),
    )
    layout = result_layout(spec, "t")
    keys = ["u1", "", "ü", 1, 1.0, -2.5, 10**30, True, False, None]
    rows = [ResultRow((k,), 10_000 * i, 10_000 * (i + 1), (i, 0.5 * i)) for i, k in enumerate(keys)]
    fast = encode_one_key_windowed(rows)
    general = encode_rows(layout, rows)
    assert [tuple(r) for r in fast] == [tuple(r) for r in general]
    assert [r[:2] for r in fast] == [
        ("u1", "s"),
        ("", "s"),
        ("ü", "s"),
        ("1", "n"),
        ("1.0", "n"),
        ("-2.5", "n"),
        (str(10**30), "n"),
        ("true", "b"),
        ("false", "b"),
        (None, "-"),
    ]
    assert PostgresTableSink(layout).encode(rows) == fast


def test_general_row_encoding_sends_first_and_last_as_json_text() -> None:
    layout = result_layout(SPEC, "t")
    row = ResultRow(("u1", 7), 0, 60_000, (3, 1.5, {"a": [1, None]}))
    assert PostgresTableSink(layout).encode([row]) == [
        ["u1", "7", "sn", 0, 60_000, 3, 1.5, '{"a":[1,null]}']
    ]

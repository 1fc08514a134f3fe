"""Pure parts of a batch load: the documents of aggregation rows, the SQL of each write
mode, and which columns of an existing table records are loaded into."""

from __future__ import annotations

import json

import pytest

from streamproc.batch.report import BatchReport, reason_lines, summary_lines
from streamproc.engine import AggSpec, QuerySpec, ResultRow, WindowSpec
from streamproc.sinks.layout import result_layout
from streamproc.sinks.load_rows import (
    STAGE,
    insert_sql,
    passthrough_columns,
    passthrough_table_sql,
    result_doc,
)

SPEC = QuerySpec(
    group_by=("user_id", "kind"),
    aggregations=(AggSpec("n", None, "count"), AggSpec("v_first", "v", "first")),
    output_mode="complete",
    event_time_column="ts",
    window=WindowSpec(60_000, 60_000),
)
ROWS = f'FROM {STAGE} s CROSS JOIN LATERAL jsonb_populate_record(NULL::"t", s.doc) r'


def test_a_result_row_is_the_streaming_sinks_row_as_json() -> None:
    layout = result_layout(SPEC, "t")
    row = ResultRow(("u1", 7), -60_000, 0, (3, {"x": [1]}))
    assert json.loads(result_doc(layout, row)) == {
        "user_id": "u1",
        "kind": "7",
        "group_key_types": "sn",
        "window_start": "1969-12-31T23:59:00+00:00",
        "window_end": "1970-01-01T00:00:00+00:00",
        "n": 3,
        "v_first": {"x": [1]},
    }


def test_a_non_finite_number_is_refused_before_the_load() -> None:
    layout = result_layout(SPEC, "t")
    with pytest.raises(ValueError):
        result_doc(layout, ResultRow(("u1", None), 0, 60_000, (1, float("nan"))))


@pytest.mark.parametrize("mode", ["append", "overwrite"])
def test_append_and_overwrite_insert_every_row_in_load_order(mode: str) -> None:
    sql = insert_sql("t", ["a", "record"], mode, record_column="record")  # type: ignore[arg-type]
    assert sql == f'INSERT INTO "t" ("a", "record") SELECT r."a", s.doc {ROWS} ORDER BY s.seq'


def test_upsert_keeps_the_last_row_of_a_key_and_updates_the_others() -> None:
    sql = insert_sql("t", ["k", "a", "b"], "upsert", ["k"])
    assert sql == (
        f'INSERT INTO "t" ("k", "a", "b") SELECT DISTINCT ON (r."k") r."k", r."a", r."b" {ROWS} '
        'ORDER BY r."k", s.seq DESC ON CONFLICT ("k") DO UPDATE SET "a" = EXCLUDED."a", '
        '"b" = EXCLUDED."b"'
    )


def test_upsert_of_key_columns_only_does_nothing_on_conflict() -> None:
    assert insert_sql("t", ["k"], "upsert", ["k"]).endswith('ON CONFLICT ("k") DO NOTHING')


def test_names_are_quoted_so_no_config_can_inject_sql() -> None:
    sql = insert_sql('s.x"; DROP TABLE y; --', ['c"'], "append")
    assert 'INSERT INTO "s"."x""; DROP TABLE y; --" ("c""")' in sql


def test_a_created_pass_through_table_is_its_upsert_keys_and_the_record() -> None:
    assert passthrough_table_sql("t", ()) == (
        'CREATE TABLE IF NOT EXISTS "t" (\n  "record" jsonb NOT NULL\n)'
    )
    assert passthrough_table_sql("s.t", ("id", "day")) == (
        'CREATE TABLE IF NOT EXISTS "s"."t" (\n  "id" jsonb,\n  "day" jsonb,\n'
        '  "record" jsonb NOT NULL,\n'
        '  CONSTRAINT "t_key" UNIQUE NULLS NOT DISTINCT ("id", "day")\n)'
    )


def test_records_fill_the_columns_named_after_their_fields_and_a_record_column() -> None:
    table = [("id", "integer"), ("record", "jsonb"), ("loaded_at", "timestamp"), ("k", "text")]
    assert passthrough_columns(table, {"id", "other"}, ("k",)) == (["id", "record", "k"], "record")
    # a column called record that is not jsonb is just a column
    assert passthrough_columns([("record", "text")], {"record"}, ()) == (["record"], None)
    assert passthrough_columns([("x", "text")], {"id"}, ()) == ([], None)


def test_reasons_are_counted_most_frequent_first_with_the_first_position() -> None:
    items = [("f:1", "b"), ("f:2", "a"), ("f:3", "a")] + [(f"g:{i}", f"r{i}") for i in range(12)]
    lines = reason_lines(items)
    assert lines[:2] == ["2 x a (first: f:2)", "1 x b (first: f:1)"]
    assert lines[-1] == "4 more, with 4 other reason(s)"
    assert len(lines) == 11


def test_reasons_that_differ_only_in_the_value_they_quote_are_one_line() -> None:
    # 371 records with one problem were ten "1 x" lines and "361 more".
    items = [(f"a.jsonl:{i}", f"event_time: 'day {i}' is not an ISO-8601 time") for i in range(371)]
    items += [
        (f"b.jsonl:{i}", f"value: {i}e400 is out of range (needed by value:sum)") for i in (1, 2)
    ]
    items += [("c.jsonl:1", "value: not JSON (Expecting value: line 1 column 1 (char 0))")]
    items += [("c.jsonl:2", "value: not JSON (Unterminated string starting at: line 1 column 9)")]
    items += [("d.jsonl:1", "event_time: missing")] * 2
    assert reason_lines(items) == [
        "371 x event_time: ... is not an ISO-8601 time (first: a.jsonl:0, 'day 0')",
        "2 x value: ... is out of range (needed by value:sum) (first: b.jsonl:1, 1e400)",
        "2 x value: not JSON (...) (first: c.jsonl:1, Expecting value: line 1 column 1 (char 0))",
        "2 x event_time: missing (first: d.jsonl:1)",
    ]


def test_the_summary_says_what_was_read_used_written_and_rejected() -> None:
    report = BatchReport("orders", aggregating=True, read=10, used=7, filtered=1, rows=3)
    report.bad = [("partition 0 offset 4", "value: not JSON")] * 2
    report.written, report.deleted = 2, 5
    report.refused = [("result row (user_id='u')", "value too long")]
    assert summary_lines(report, "p", "t", "overwrite", 1.25) == [
        "batch job p: 10 record(s) read from orders in 1.2s",
        "  aggregated 7 into 3 row(s), bad 2, filtered 1",
        "  table t (overwrite): 2 row(s) written, 1 rejected by the table, "
        "5 previous row(s) deleted",
        "  bad: 2 x value: not JSON (first: partition 0 offset 4)",
        "  rejected: 1 x value too long (first: result row (user_id='u'))",
    ]

"""The `streamproc` command line: validate, schema, run, local.

Each sub-command imports what it needs lazily, so `streamproc validate` stays
fast and imports no Kafka or PostgreSQL client.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence


def _cmd_validate(args: argparse.Namespace) -> int:
    # The run's own check: validate builds the run plan too, so it refuses
    # exactly what `streamproc run` would, with the same line.
    from streamproc.commands.preflight import preflight

    all_ok = True
    for path in args.configs:
        checked = preflight(path)
        for line in checked.problem_lines(path):
            print(line, file=sys.stderr)
        for note in checked.notes:
            print(f"{path}: note: {note}")
        if checked.ok:
            print(f"{path}: ok")
        all_ok = all_ok and checked.ok
    return 0 if all_ok else 1


def _cmd_schema(args: argparse.Namespace) -> int:
    from streamproc.config import json_schema

    print(json.dumps(json_schema(), indent=2, sort_keys=False))
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from streamproc.commands.run import run_from_cli

    return run_from_cli(args.config, max_seconds=args.max_seconds)


def _cmd_reset(args: argparse.Namespace) -> int:
    from streamproc.commands.reset import reset_from_cli

    return reset_from_cli(
        args.target, dsn=args.dsn, drop_results=args.drop_results, yes=args.yes, wait=args.wait
    )


def _cmd_status(args: argparse.Namespace) -> int:
    from streamproc.commands.status import status_from_cli

    return status_from_cli(
        args.config, as_json=args.json, stale_after=args.stale_after, batches=args.batches
    )


def _cmd_local(args: argparse.Namespace) -> int:
    from streamproc.local import local_main

    return local_main(list(args.local_args))


def _count(text: str) -> int:
    """An argparse type: a whole number, 1 or more."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected 1 or more")
    return value


def _seconds(text: str) -> float:
    """An argparse type: a number of seconds above 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r}: expected a number of seconds above 0")
    return value


#: The end of every epilog: argparse's own exit status.
_USAGE = "2 a usage error (unknown option, missing argument)"


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser of the `streamproc` command."""
    from streamproc import __version__

    parser = argparse.ArgumentParser(
        prog="streamproc",
        description="Event-time stream processing from Kafka to PostgreSQL, exactly once. "
        "`streamproc COMMAND --help` tells more about each command.",
        epilog="exit status: 0 done; 1 an error, said in one line on stderr; 2 a usage error; "
        "each command's --help lists its own",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    validate = sub.add_parser(
        "validate",
        help="validate pipeline configs and plan their runs (exit 1 on any error)",
        description="Validate each config and build its run plan, as `streamproc run` and the "
        "Faust worker do: one line per error on stderr, warnings and notes, then "
        "'<path>: ok' for each config that would run.",
        epilog=f"exit status: 0 every config is valid; 1 any is not; {_USAGE}",
    )
    validate.add_argument("configs", nargs="+", metavar="CONFIG")
    validate.set_defaults(func=_cmd_validate, parser=validate)

    schema = sub.add_parser(
        "schema",
        help="print the JSON Schema of the config format",
        description="Print the JSON Schema of the pipeline config format on stdout "
        "(for editors: a config's $schema can point at it).",
        epilog=f"exit status: 0 printed; {_USAGE}",
    )
    schema.set_defaults(func=_cmd_schema, parser=schema)

    run = sub.add_parser(
        "run",
        help="run a streaming pipeline in this process (or a batch job)",
        description="Run one worker of a streaming query in this process until it is "
        "stopped (SIGINT, SIGTERM or SIGHUP commit the batch in flight first) or, with "
        "triggerMode once or availablenow, until the end offsets taken at its start; a "
        "mode: batch config runs as one job. Logs go to stderr (key=value lines on a "
        "terminal, JSON lines otherwise; STREAMPROC_LOG_FORMAT=kv|json|auto chooses), the "
        "closing summary to stdout.",
        epilog="exit status: 0 done, or a continuous query stopped by a signal; 1 the config "
        "is invalid or the query (or job) failed, said in one line; 124 a bounded run "
        "--max-seconds stopped before its end; 128+N a bounded run or a batch job signal N "
        f"cut short (130 SIGINT, 143 SIGTERM, 129 SIGHUP; a job then loaded nothing); {_USAGE}",
    )
    run.add_argument("config", metavar="CONFIG")
    run.add_argument(
        "--max-seconds",
        type=_seconds,
        default=None,
        help="stop (committing the batch in flight) after this many seconds of wall time",
    )
    run.set_defaults(func=_cmd_run, parser=run)

    reset = sub.add_parser(
        "reset",
        help="drop a query's checkpoint so that it starts over (asks first)",
        description="Drop a query's checkpoint (positions, ledger, partial states, runs): "
        "its next run reads the topic from startingOffsets again.",
        epilog="exit status: 0 dropped; 1 not confirmed, the config or query cannot be "
        "read, no checkpoint of the query found, a worker of the query is running (without "
        "--wait), a table not the query's named, or the database cannot be reached, said in "
        f"one line; {_USAGE}",
    )
    reset.add_argument("target", metavar="CONFIG|QUERY", help="a pipeline config, or a query name")
    reset.add_argument(
        "--dsn", help="PostgreSQL URL, when QUERY is a name (else STREAMPROC_PG_DSN)"
    )
    reset.add_argument(
        "--drop-results",
        action="store_true",
        help="also drop the query's result table (only one registered to it) and delete its "
        "rows of its late-data and dead-letter tables, and drop a file source's registered "
        "files (kept otherwise: the kept rows' keys carry their ordinals)",
    )
    reset.add_argument(
        "--wait",
        action="store_true",
        help="when workers of the query run, wait for them to stop (else refuse at once)",
    )
    reset.add_argument("--yes", action="store_true", help="do not ask (needed off a terminal)")
    reset.set_defaults(func=_cmd_reset, parser=reset)

    status = sub.add_parser(
        "status",
        help="a query's progress: committed and end offsets, lag, watermarks, recent batches",
        description="Per partition the committed offset (from the checkpoint in PostgreSQL), "
        "the end offset (from the broker), the lag, the watermark and the last commit; then "
        "the newest batches' counts and rates. Reads only; safe beside running workers.",
        epilog="exit status: 0 fine; 1 the config, the query or a server cannot be read; "
        "2 with --stale-after, the query is stale (2 is also a usage error, which prints "
        "usage first)",
    )
    status.add_argument("config", metavar="CONFIG")
    status.add_argument("--json", action="store_true", help="one JSON document instead of text")
    status.add_argument(
        "--stale-after",
        metavar="DURATION",
        help="exit 2 when records wait and the query has not committed for this long "
        "(e.g. '5 minutes'; '0 seconds': whenever records wait)",
    )
    status.add_argument(
        "--batches",
        type=_count,
        default=10,
        metavar="N",
        help="how many of the newest batches to show (default 10, at least 1)",
    )
    status.set_defaults(func=_cmd_status, parser=status)

    local = sub.add_parser(
        "local",
        help="start/stop the embedded broker and PostgreSQL (up | down | status)",
        add_help=False,
    )
    local.add_argument("local_args", nargs=argparse.REMAINDER)
    local.set_defaults(func=_cmd_local)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `streamproc` console script."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:1] == ["local"]:
        # `local` has a parser of its own (up, down, status); handing it every
        # argument lets `streamproc local --help` reach it.
        return _cmd_local(argparse.Namespace(local_args=arguments[1:]))
    parser = build_parser()
    args, unknown = parser.parse_known_args(arguments)
    if unknown:
        # The command's own usage, not the top level's: `reset --force` is about reset.
        command: argparse.ArgumentParser = args.parser
        command.error(f"unrecognized arguments: {' '.join(unknown)}")
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())

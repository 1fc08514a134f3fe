"""``streamproc local up|down|status``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from streamproc.local._state import StackError, StackInfo, State
from streamproc.local.stack import default_run_dir, stack_status, start_stack, stop_stack

#: Exit status of ``status`` when the stack is not running.
EXIT_NOT_RUNNING = 3


def _print_info(info: StackInfo) -> None:
    print(f"bootstrap={info.bootstrap}")
    print(f"dsn={info.dsn}")
    print(f"run_dir={info.run_dir}")
    print(f"broker_pid={info.broker_pid}")
    print(f"postgres_pid={info.postgres_pid}")


def _print_exports(info: StackInfo) -> None:
    print("# to point streamproc and the tests at this stack:")
    print(f"export STREAMPROC_KAFKA_BOOTSTRAP={info.bootstrap}")
    print(f"export STREAMPROC_PG_DSN={info.dsn}")


def _up(run_dir: Path) -> int:
    info = stack_status(run_dir)
    if info is not None:
        print(f"# already running in {run_dir}")
    else:
        try:
            info = start_stack(run_dir)
        except StackError as exc:
            print(f"streamproc: local up: {exc}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print("interrupted: nothing was left running", file=sys.stderr)
            return 130
        state = State.load(info.run_dir)
        timings = state.timings if state is not None else {}
        print(
            f"# started in {timings.get('total_s', 0):.2f} s "
            f"(broker {timings.get('broker_s', 0):.2f} s, "
            f"postgres {timings.get('postgres_s', 0):.2f} s "
            f"of which initdb {timings.get('initdb_s', 0):.2f} s)"
        )
    _print_info(info)
    _print_exports(info)
    return 0


def _down(run_dir: Path) -> int:
    if stop_stack(run_dir):
        print(f"stopped the stack in {run_dir}")
    else:
        print(f"nothing was running in {run_dir}")
    return 0


def _status(run_dir: Path) -> int:
    info = stack_status(run_dir)
    if info is None:
        print(f"not running (run dir {run_dir})")
        return EXIT_NOT_RUNNING
    _print_info(info)
    return 0


def local_main(argv: list[str]) -> int:
    """Run ``up``, ``down`` or ``status`` on the local stack.

    ``up`` starts the broker and PostgreSQL in the background (they keep
    running after it returns) and prints ``bootstrap=...``/``dsn=...`` lines
    and ``export`` hints; it is a no-op if the stack already runs. ``down``
    stops them and deletes their data (exit 0 even if nothing ran). ``status``
    prints the addresses and exits 0 if the stack runs, 3 if not.

    The run directory is ``--run-dir``, else ``$STREAMPROC_RUN_DIR``, else
    ``.run/local`` under the working directory.

    Args:
        argv: Arguments after ``local``, e.g. ``["up", "--run-dir", "x"]``.

    Returns:
        The process exit status.
    """
    parser = argparse.ArgumentParser(
        prog="streamproc local",
        description="Local Kafka-compatible broker and PostgreSQL.",
        epilog="exit status: up 0 running, 1 could not start, 130 interrupted; down 0; "
        "status 0 running, 3 not; 2 a usage error",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    for name, text, codes in (
        (
            "up",
            "start the stack in the background",
            "0 running (started, or already running); 1 it could not start, said in one "
            "line; 130 interrupted, nothing left running",
        ),
        ("down", "stop the stack and delete its data", "0 stopped, or nothing was running"),
        ("status", "exit 0 if the stack runs, 3 if not", "0 running; 3 not running"),
    ):
        sub = commands.add_parser(
            name,
            help=text,
            description=text,
            epilog=f"exit status: {codes}; 2 a usage error",
        )
        sub.add_argument(
            "--run-dir",
            type=Path,
            default=None,
            help="state, logs and data (default: $STREAMPROC_RUN_DIR or .run/local)",
        )
    args = parser.parse_args(argv)
    run_dir: Path = (args.run_dir or default_run_dir()).resolve()
    if args.command == "up":
        return _up(run_dir)
    if args.command == "down":
        return _down(run_dir)
    return _status(run_dir)

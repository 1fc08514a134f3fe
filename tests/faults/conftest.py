"""Fixtures of the fault tests.

``own_stack``: a private broker + PostgreSQL for tests that stop PostgreSQL or
freeze the broker, so that the session stack other tests share never sees
the outage. The kernel kills it if pytest dies (die_with_parent).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from streamproc.local import StackInfo, start_stack, stop_stack


@pytest.fixture
def own_stack() -> Iterator[StackInfo]:
    # Not under pytest's tmp_path: PostgreSQL runs as another user when root,
    # and a pytest session starting meanwhile resets its tmp root to 0700.
    run_dir = Path(tempfile.mkdtemp(prefix="streamproc-fault-stack-"))
    info = start_stack(run_dir, die_with_parent=True)
    try:
        yield info
    finally:
        stop_stack(run_dir)
        shutil.rmtree(run_dir, ignore_errors=True)

"""Fixtures of the fault tests.

``own_stack``: a private broker + PostgreSQL for tests that stop PostgreSQL or
freeze the broker, so that the session stack other tests share never sees
the outage. The kernel kills it if pytest dies (die_with_parent).

``pipeline`` and ``own_pipeline``: make the test's `Pipeline` config (topic,
table and query named `unique_name`, checkpoints under `tmp_path`) on the
session stack or on ``own_stack``; keyword arguments override its fields.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from streamproc.local import StackInfo, start_stack, stop_stack
from tests.faults.harness import PipelineFactory, pipeline_factory


@pytest.fixture
def own_stack() -> Iterator[StackInfo]:
    """A private broker + PostgreSQL for this test alone."""
    # Not under pytest's tmp_path: PostgreSQL runs as another user when root,
    # and a pytest session starting meanwhile resets its tmp root to 0700.
    run_dir = Path(tempfile.mkdtemp(prefix="streamproc-fault-stack-"))
    info = start_stack(run_dir, die_with_parent=True)
    try:
        yield info
    finally:
        stop_stack(run_dir)
        shutil.rmtree(run_dir, ignore_errors=True)


@pytest.fixture
def pipeline(
    unique_name: str, kafka_bootstrap: str, pg_dsn: str, tmp_path: Path
) -> PipelineFactory:
    """Make the test's pipeline config on the session stack."""
    return pipeline_factory(unique_name, kafka_bootstrap, pg_dsn, tmp_path)


@pytest.fixture
def own_pipeline(unique_name: str, own_stack: StackInfo, tmp_path: Path) -> PipelineFactory:
    """Make the test's pipeline config on its own stack (``own_stack``)."""
    return pipeline_factory(unique_name, own_stack.bootstrap, own_stack.dsn, tmp_path)

"""`streamproc.testing.run_pipeline` and session windows (issue 22, phase 1).

It runs the runtime's plan, which does not commit sessions yet, so it refuses them
with the line `streamproc run` prints; the pure engine runs them
(tests/unit/test_engine_sessions.py).
"""

from __future__ import annotations

import pytest

from streamproc.testing import run_pipeline
from tests.unit.test_config_broken import mutate
from tests.unit.test_config_sessions import REFUSED, SESSIONS, P


def test_run_pipeline_refuses_sessions_with_the_runs_line() -> None:
    with pytest.raises(ValueError) as raised:
        run_pipeline(mutate(SESSIONS), [], env={})
    assert str(raised.value) == f"{P}.gapDuration: " + REFUSED.format(kind="streaming")

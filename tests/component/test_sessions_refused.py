"""`streamproc.testing.run_pipeline` and session windows to a Kafka topic (issue 22).

Sessions run through `run_pipeline` (tests/component/test_sessions_streaming.py); to a
topic they are refused with the line `streamproc run` prints: a session's row moves as
it grows or merges, and a message cannot be taken back.
"""

from __future__ import annotations

import pytest

from streamproc.testing import run_pipeline
from tests.unit.test_config_broken import mutate
from tests.unit.test_config_sessions import REFUSED, SESSIONS, TO_KAFKA, P


def test_run_pipeline_refuses_sessions_to_a_topic_with_the_runs_line() -> None:
    with pytest.raises(ValueError) as raised:
        run_pipeline(mutate({**SESSIONS, **TO_KAFKA}), [], env={})
    assert str(raised.value) == f"{P}.gapDuration: " + REFUSED

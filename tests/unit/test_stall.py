"""StallWatch: a worker or a bounded run that makes no progress is said within a minute."""

from __future__ import annotations

from streamproc.runtime.stall import StallWatch


def test_an_idle_continuous_query_is_never_said_stuck() -> None:
    watch = StallWatch(0.0)
    assert watch.check(3_600.0) is None


def test_setbacks_without_a_commit_are_said_each_minute_with_the_last_reason() -> None:
    watch = StallWatch(0.0)
    watch.setback("a batch was stale: partitions [1] moved")
    watch.setback("the sink was unavailable: connection refused")
    assert watch.check(59.0) is None
    said = watch.check(60.0)
    assert said is not None and not said.stop
    assert said.message == (
        "no progress for 60s; 2 attempt(s) did not commit, the last: the sink was "
        "unavailable: connection refused"
    )
    assert watch.check(100.0) is None  # said once a minute
    assert watch.check(120.0) is not None
    watch.progressed(130.0)
    assert watch.check(500.0) is None  # a commit: the setbacks are behind it


def test_a_bounded_run_whose_partitions_stop_moving_is_said_then_stopped() -> None:
    watch = StallWatch(0.0, stop_after_s=600.0)
    behind = {1: (75_007, 100_000), 3: (74_992, 100_000)}
    watch.run_offsets(1.0, {0: 100_000, 1: 75_007, 2: 100_000, 3: 74_992})
    assert watch.check(59.0, behind) is None
    said = watch.check(61.0, behind)
    assert said is not None and not said.stop
    assert said.message == (
        "no progress for 61s; partitions not at the run's end: 1 at offset 75,007 of 100,000, "
        "3 at offset 74,992 of 100,000; no attempt failed: no worker is committing these "
        "partitions"
    )
    stop = watch.check(600.0, behind)
    assert stop is not None and stop.stop


def test_another_workers_commit_is_progress_of_the_run() -> None:
    watch = StallWatch(0.0, stop_after_s=600.0)
    behind = {1: (10, 100)}
    watch.run_offsets(0.0, {1: 10})
    watch.run_offsets(550.0, {1: 20})  # moved: someone is working on it
    assert watch.check(600.0, {1: (20, 100)}) is None
    assert watch.check(1_100.0, behind) is not None
    assert watch.check(1_150.0, behind).stop  # type: ignore[union-attr]


def test_a_complete_run_without_setbacks_says_nothing() -> None:
    watch = StallWatch(0.0, stop_after_s=600.0)
    assert watch.check(10_000.0, {}) is None

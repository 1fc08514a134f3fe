"""The batch worker thread, the garbage collector's pace, and phase times across threads."""

from __future__ import annotations

import asyncio
import gc
import threading
import time

import pytest

from streamproc.runtime.gcpolicy import YOUNG_THRESHOLD, batch_pace
from streamproc.runtime.offload import Offload
from streamproc.timing import PhaseTimes


def test_offload_runs_on_another_thread_and_returns_or_raises() -> None:
    async def main() -> None:
        offload = Offload()
        try:
            name = await offload.run(lambda: threading.current_thread().name)
            assert name.startswith("streamproc-batch")
            with pytest.raises(ZeroDivisionError):
                await offload.run(lambda: 1 // 0)
        finally:
            offload.close()

    asyncio.run(main())


def test_a_cancelled_caller_waits_for_its_job_to_finish() -> None:
    done: list[str] = []

    def slow() -> None:
        time.sleep(0.2)
        done.append("finished")

    async def main() -> None:
        offload = Offload()
        task = asyncio.ensure_future(offload.run(slow))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # The engine may be closed now: the job must be over.
        assert done == ["finished"]
        offload.close()

    asyncio.run(main())


def test_the_loop_keeps_running_while_a_job_runs() -> None:
    ticks: list[float] = []

    async def ticker() -> None:
        for _ in range(5):
            ticks.append(time.monotonic())
            await asyncio.sleep(0.01)

    async def main() -> None:
        offload = Offload()
        tick = asyncio.ensure_future(ticker())
        await offload.run(time.sleep, 0.2)
        offload.close()
        await tick

    asyncio.run(main())
    assert len(ticks) == 5


def test_batch_pace_nests_and_restores_the_previous_thresholds() -> None:
    before = gc.get_threshold()
    with batch_pace():
        assert gc.get_threshold()[0] == YOUNG_THRESHOLD
        with batch_pace():
            assert gc.get_threshold()[0] == YOUNG_THRESHOLD
        assert gc.get_threshold()[0] == YOUNG_THRESHOLD
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0


def test_phase_times_add_up_across_threads() -> None:
    times = PhaseTimes()

    def work() -> None:
        for _ in range(2_000):
            times.add({"x": 1.0})

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert times.seconds["x"] == 8_000.0

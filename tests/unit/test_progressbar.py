"""The bounded run's progress bar: its text, its rate limit, and silence off a terminal."""

from __future__ import annotations

import io
import logging
from dataclasses import replace
from pathlib import Path

from streamproc.commands.progressbar import ClearBarFilter, ProgressBar, render_bar
from streamproc.commands.run import progress_bar_for
from streamproc.config import load_config
from streamproc.runtime.planner import plan_from_config

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "streaming-example.json"


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_text_says_share_offsets_rate_and_eta() -> None:
    # 250,000 of 1,000,000 offsets in 5 s: 50,000/s, 750,000 to go: 15 s.
    assert render_bar(250_000, 1_000_000, 5.0) == (
        "[#####...............]  25%  250,000/1,000,000 offsets  50,000/s  ETA 15s"
    )
    assert render_bar(0, 10, 0.0) == "[....................]   0%  0/10 offsets  -/s  ETA -"
    assert render_bar(10, 10, 2.0).endswith("100%  10/10 offsets  5/s  done")
    assert render_bar(1, 3_601, 1.0).endswith("ETA 1h00m")
    assert render_bar(1, 200, 1.0).endswith("ETA 3m19s")


def test_an_empty_run_is_done_and_done_never_exceeds_the_total() -> None:
    assert render_bar(0, 0, 1.0).startswith("[####################] 100%  0/0 offsets")
    assert "12/10" not in render_bar(12, 10, 1.0)


def test_redraws_at_most_every_quarter_second_and_ends_the_line() -> None:
    stream, clock = Terminal(), Clock()
    bar = ProgressBar(stream, clock=clock)
    bar.update(1, 10)
    clock.now += 0.1
    bar.update(2, 10)  # too soon: not drawn
    clock.now += 0.2
    bar.update(3, 10)
    bar.finish(10, 10)
    drawn = stream.getvalue().split("\r\x1b[K")[1:]
    assert [line.split()[1] for line in drawn] == ["10%", "30%", "100%"]
    assert stream.getvalue().endswith("done\n")


def test_nothing_is_drawn_when_the_stream_is_not_a_terminal() -> None:
    stream = io.StringIO()
    bar = ProgressBar(stream)
    bar.update(1, 10)
    bar.finish(10, 10)
    bar.clear()
    assert not bar.enabled and stream.getvalue() == ""


def test_a_log_line_erases_the_bar_first() -> None:
    stream, clock = Terminal(), Clock()
    bar = ProgressBar(stream, clock=clock)
    handler = logging.StreamHandler(stream)
    handler.addFilter(ClearBarFilter(bar))
    logger = logging.getLogger("test.progressbar")
    logger.addHandler(handler)
    try:
        bar.update(5, 10)
        logger.warning("a line")
        bar.update(6, 10)  # drawn again at once, on the next line
    finally:
        logger.removeHandler(handler)
    text = stream.getvalue()
    assert text.index("50%") < text.index("\r\x1b[Ka line\n") < text.index("60%")


def test_only_a_bounded_kafka_run_on_a_terminal_gets_a_bar() -> None:
    cfg = load_config(CONFIG, env={})
    plan = replace(plan_from_config(cfg), trigger="availablenow")
    assert progress_bar_for(plan, Terminal()) is not None
    assert progress_bar_for(plan, io.StringIO()) is None  # not a terminal
    assert progress_bar_for(replace(plan, trigger="continuous"), Terminal()) is None
    # A file source's offsets are file and byte: no count to show.
    assert progress_bar_for(replace(plan, source_type="file"), Terminal()) is None

"""Process plumbing of the local stack: Ctrl-C deferral around spawning."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from types import FrameType

import pytest

from streamproc.local import _proc


@pytest.fixture
def sigint_handler() -> Iterator[None]:
    """Restore the SIGINT handler a test changes."""
    previous = signal.getsignal(signal.SIGINT)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def test_sigint_deferred_raises_keyboard_interrupt_on_exit(sigint_handler: None) -> None:
    signal.signal(signal.SIGINT, signal.default_int_handler)
    reached_end = False
    with pytest.raises(KeyboardInterrupt), _proc._sigint_deferred():
        signal.raise_signal(signal.SIGINT)
        reached_end = True
    assert reached_end


def test_sigint_deferred_hands_over_to_the_previous_handler(sigint_handler: None) -> None:
    calls: list[int] = []

    def handler(signum: int, frame: FrameType | None) -> None:
        calls.append(signum)

    signal.signal(signal.SIGINT, handler)
    with _proc._sigint_deferred():
        signal.raise_signal(signal.SIGINT)
        assert calls == []
    assert calls == [signal.SIGINT]
    assert signal.getsignal(signal.SIGINT) is handler


def test_sigint_deferred_keeps_an_ignored_sigint_ignored(sigint_handler: None) -> None:
    # A process started with SIGINT ignored (background job, nohup) must not
    # get a KeyboardInterrupt out of the spawn window.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with _proc._sigint_deferred():
        signal.raise_signal(signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN

"""Retries, backoff and the circuit breaker, on an injected clock and sleep (no waiting)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from typing import Any

import pytest

from streamproc.port_errors import FailureKind
from streamproc.runtime.failure_kinds import classify_failure, first_line
from streamproc.runtime.plan import BreakerPolicy, RetryPolicy
from streamproc.runtime.resilience import (
    BreakerState,
    CircuitBreaker,
    CircuitOpenError,
    backoff_delays,
    call_with_retry,
    outage_delay,
)


class FakeClock:
    """Wall time that only moves when a test (or the fake sleep) moves it."""

    def __init__(self) -> None:
        self.now = 1_000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


class Flaky:
    """An operation that fails with the given exceptions, in order, then returns 'ok'."""

    def __init__(self, *failures: Exception) -> None:
        self.failures = list(failures)
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        return "ok"


class SqlStateError(Exception):
    """Stands in for an asyncpg error: only its SQLSTATE matters to the classifier."""

    def __init__(self, sqlstate: str, message: str = "error") -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def outage() -> Exception:
    return ConnectionRefusedError(111, "Connect call failed")


NO_JITTER = {"jitter": False}

# ----------------------------------------------------------------------------- backoff


@pytest.mark.parametrize(
    ("policy", "delays"),
    [
        # exponential: 0.5, 1, 2, 4, then capped at 5
        (
            RetryPolicy("exponential", 7, 0.5, 5.0, 2.0, **NO_JITTER),
            [0.5, 1.0, 2.0, 4.0, 5.0, 5.0],
        ),
        (RetryPolicy("exponential", 4, 1.0, 60.0, 3.0, **NO_JITTER), [1.0, 3.0, 9.0]),
        (RetryPolicy("fixed", 4, 2.0, 60.0, 2.0, **NO_JITTER), [2.0, 2.0, 2.0]),
        # the cap applies to fixed delays too
        (RetryPolicy("fixed", 3, 90.0, 60.0, 2.0, **NO_JITTER), [60.0, 60.0]),
        (RetryPolicy("none", 5, 1.0, 60.0, 2.0, **NO_JITTER), []),
        (RetryPolicy("exponential", 1, 1.0, 60.0, 2.0, **NO_JITTER), []),
    ],
)
def test_backoff_delays(policy: RetryPolicy, delays: list[float]) -> None:
    assert backoff_delays(policy) == delays


def test_jitter_stays_within_the_un_jittered_delay_and_varies() -> None:
    policy = RetryPolicy("exponential", 6, 1.0, 8.0, 2.0, jitter=True)
    plain = backoff_delays(RetryPolicy("exponential", 6, 1.0, 8.0, 2.0, jitter=False))
    seen = [backoff_delays(policy, random.Random(seed)) for seed in range(50)]
    for delays in seen:
        assert len(delays) == 5
        assert all(0 <= d <= p for d, p in zip(delays, plain, strict=True))
    assert len({tuple(d) for d in seen}) == 50  # full jitter: workers do not retry in step


@pytest.mark.parametrize(
    ("policy", "attempts", "delays"),
    [
        # grows like the retry policy, capped by maxDelaySeconds
        (RetryPolicy("exponential", 3, 2.0, 20.0, 2.0), range(6), [2, 4, 8, 16, 20, 20]),
        (RetryPolicy("fixed", 3, 3.0, 60.0, 2.0), range(3), [3, 3, 3]),
        # never below one second: strategy none or a zero delay is no busy loop
        (RetryPolicy("none", 1, 0.0, 60.0, 2.0), range(3), [1, 1, 1]),
        (RetryPolicy("exponential", 3, 0.1, 0.5, 2.0), range(3), [1, 1, 1]),
    ],
)
def test_outage_delay(policy: RetryPolicy, attempts: range, delays: list[float]) -> None:
    assert [outage_delay(policy, a) for a in attempts] == delays


def test_outage_delay_of_a_very_long_outage_stays_at_the_cap() -> None:
    assert outage_delay(RetryPolicy("exponential", 3, 1.0, 30.0, 10.0), 10_000) == 30.0


# ----------------------------------------------------------------------------- breaker


def breaker(
    clock: FakeClock, threshold: int = 3, reset_s: float = 10.0, half_open: int = 1
) -> tuple[CircuitBreaker, list[BreakerState]]:
    changes: list[BreakerState] = []
    cb = CircuitBreaker(
        BreakerPolicy(True, threshold, reset_s, half_open),
        clock=clock,
        on_change=changes.append,
    )
    return cb, changes


def test_breaker_opens_at_the_threshold_of_consecutive_failures() -> None:
    clock = FakeClock()
    cb, changes = breaker(clock, threshold=3)
    cb.record_failure()
    cb.record_failure()
    cb.record_success()  # resets the count: failures must be consecutive
    cb.record_failure()
    cb.record_failure()
    assert cb.state is BreakerState.CLOSED
    cb.record_failure()
    assert cb.state is BreakerState.OPEN
    assert changes == [BreakerState.OPEN]
    with pytest.raises(CircuitOpenError, match=r"is open; next probe in 10\.0s"):
        cb.before_call()


def test_breaker_timeline_open_half_open_probe_fails_then_succeeds() -> None:
    # t=0 open --(10 s)--> half-open: one probe --fails--> open --(10 s)--> half-open
    #   --probe succeeds--> closed
    clock = FakeClock()
    cb, changes = breaker(clock, threshold=1, reset_s=10.0)
    cb.record_failure()
    assert cb.seconds_until_probe() == 10.0
    clock.now += 9.5
    assert cb.state is BreakerState.OPEN
    assert cb.seconds_until_probe() == pytest.approx(0.5)
    clock.now += 0.5
    assert cb.state is BreakerState.HALF_OPEN
    assert cb.seconds_until_probe() == 0.0
    cb.before_call()  # the probe
    with pytest.raises(CircuitOpenError, match="half-open, probe busy"):
        cb.before_call()  # a second caller while the probe runs
    cb.record_failure()  # the probe failed: open again, for a full reset timeout
    assert cb.state is BreakerState.OPEN
    assert cb.seconds_until_probe() == 10.0
    clock.now += 10.0
    cb.before_call()
    cb.record_success()
    assert cb.state is BreakerState.CLOSED
    cb.before_call()
    assert changes == [
        BreakerState.OPEN,
        BreakerState.HALF_OPEN,
        BreakerState.OPEN,
        BreakerState.HALF_OPEN,
        BreakerState.CLOSED,
    ]


def test_half_open_lets_the_configured_number_of_probes_through() -> None:
    clock = FakeClock()
    cb, _ = breaker(clock, threshold=1, reset_s=1.0, half_open=2)
    cb.record_failure()
    clock.now += 1.0
    cb.before_call()
    cb.before_call()
    with pytest.raises(CircuitOpenError):
        cb.before_call()


def test_an_abandoned_probe_frees_its_slot() -> None:
    clock = FakeClock()
    cb, _ = breaker(clock, threshold=1, reset_s=1.0)
    cb.record_failure()
    clock.now += 1.0
    cb.before_call()
    cb.record_abandoned()  # e.g. cancelled at shutdown: neither success nor failure
    cb.before_call()
    assert cb.state is BreakerState.HALF_OPEN


def test_a_disabled_breaker_never_opens() -> None:
    clock = FakeClock()
    cb = CircuitBreaker(BreakerPolicy(False, 1, 10.0, 1), clock=clock)
    for _ in range(10):
        cb.record_failure()
        cb.before_call()
    assert cb.state is BreakerState.CLOSED
    assert cb.seconds_until_probe() == 0.0


# ----------------------------------------------------------------------------- retries


def retry_call(
    op: Flaky,
    policy: RetryPolicy,
    cb: CircuitBreaker,
    clock: FakeClock,
    **kwargs: Callable[[Exception], bool],
) -> Any:
    return run(call_with_retry(op, policy, cb, what="test call", sleep=clock.sleep, **kwargs))


def test_retry_succeeds_after_failures_and_sleeps_the_policy_delays() -> None:
    clock = FakeClock()
    cb, _ = breaker(clock, threshold=10)
    op = Flaky(outage(), outage())
    policy = RetryPolicy("exponential", 3, 0.5, 60.0, 4.0, jitter=False)
    assert retry_call(op, policy, cb, clock) == "ok"
    assert op.calls == 3
    assert clock.slept == [0.5, 2.0]
    assert cb.state is BreakerState.CLOSED


def test_retry_gives_up_after_max_attempts_with_the_last_error() -> None:
    clock = FakeClock()
    cb, _ = breaker(clock, threshold=10)
    op = Flaky(outage(), outage(), TimeoutError("third"))
    with pytest.raises(TimeoutError, match="third"):
        retry_call(op, RetryPolicy("fixed", 3, 1.0, 60.0, 2.0, jitter=False), cb, clock)
    assert op.calls == 3
    assert clock.slept == [1.0, 1.0]


def test_strategy_none_tries_once() -> None:
    clock = FakeClock()
    cb, _ = breaker(clock)
    op = Flaky(outage())
    with pytest.raises(ConnectionRefusedError):
        retry_call(op, RetryPolicy("none", 5, 1.0, 60.0, 2.0), cb, clock)
    assert (op.calls, clock.slept) == (1, [])


def test_breaker_opening_during_retries_stops_them_without_calling_the_sink() -> None:
    clock = FakeClock()
    cb, changes = breaker(clock, threshold=2, reset_s=30.0)
    op = Flaky(outage(), outage(), outage(), outage())
    with pytest.raises(CircuitOpenError):
        retry_call(op, RetryPolicy("fixed", 5, 1.0, 60.0, 2.0, jitter=False), cb, clock)
    assert op.calls == 2  # the third attempt was refused by the open breaker
    assert changes == [BreakerState.OPEN]


def test_only_outages_count_against_the_breaker() -> None:
    # A rejection (the sink answered) is not an outage: it closes, never opens.
    clock = FakeClock()
    cb, changes = breaker(clock, threshold=1)
    op = Flaky(SqlStateError("22021"))
    with pytest.raises(SqlStateError):
        retry_call(
            op,
            RetryPolicy("fixed", 1, 1.0, 60.0, 2.0),
            cb,
            clock,
            is_outage=lambda exc: classify_failure(exc) is FailureKind.UNAVAILABLE,
        )
    assert changes == [] and cb.state is BreakerState.CLOSED


def test_retry_if_false_raises_at_once() -> None:
    clock = FakeClock()
    cb, _ = breaker(clock)
    op = Flaky(SqlStateError("22003"), SqlStateError("22003"))
    with pytest.raises(SqlStateError):
        retry_call(
            op,
            RetryPolicy("fixed", 5, 1.0, 60.0, 2.0),
            cb,
            clock,
            retry_if=lambda exc: classify_failure(exc) is FailureKind.UNAVAILABLE,
        )
    assert (op.calls, clock.slept) == (1, [])


def test_a_half_open_probe_through_call_with_retry_closes_the_breaker() -> None:
    clock = FakeClock()
    cb, changes = breaker(clock, threshold=1, reset_s=5.0)
    cb.record_failure()
    with pytest.raises(CircuitOpenError):
        retry_call(Flaky(), RetryPolicy("fixed", 3, 1.0, 60.0, 2.0), cb, clock)
    clock.now += 5.0
    assert retry_call(Flaky(), RetryPolicy("fixed", 3, 1.0, 60.0, 2.0), cb, clock) == "ok"
    assert changes == [BreakerState.OPEN, BreakerState.HALF_OPEN, BreakerState.CLOSED]


def test_cancellation_is_not_retried_and_frees_the_probe() -> None:
    clock = FakeClock()
    cb, _ = breaker(clock, threshold=1, reset_s=1.0)
    cb.record_failure()
    clock.now += 1.0

    async def cancelled() -> str:
        raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        run(call_with_retry(cancelled, RetryPolicy(), cb, what="x", sleep=clock.sleep))
    assert clock.slept == []
    cb.before_call()  # the probe slot is free again


# ----------------------------------------------------------------------------- failure kinds


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (ConnectionRefusedError(111, "refused"), FailureKind.UNAVAILABLE),
        (ConnectionResetError(104, "reset"), FailureKind.UNAVAILABLE),
        (TimeoutError(), FailureKind.UNAVAILABLE),
        (OSError(113, "no route to host"), FailureKind.UNAVAILABLE),
        (CircuitOpenError("open"), FailureKind.UNAVAILABLE),
        (SqlStateError("08003"), FailureKind.UNAVAILABLE),  # connection does not exist
        (SqlStateError("08006"), FailureKind.UNAVAILABLE),  # connection failure
        (SqlStateError("57P01"), FailureKind.UNAVAILABLE),  # admin shutdown
        (SqlStateError("57P03"), FailureKind.UNAVAILABLE),  # the database is starting up
        (SqlStateError("53300"), FailureKind.UNAVAILABLE),  # too many connections
        (SqlStateError("40001"), FailureKind.UNAVAILABLE),  # serialization failure
        (SqlStateError("58030"), FailureKind.UNAVAILABLE),  # I/O error
        (SqlStateError("22003"), FailureKind.REJECTED),  # numeric value out of range
        (SqlStateError("22021"), FailureKind.REJECTED),  # NUL in text
        (SqlStateError("22P05"), FailureKind.REJECTED),  # untranslatable character
        (SqlStateError("23505"), FailureKind.REJECTED),  # unique violation
        (SqlStateError("54000"), FailureKind.REJECTED),  # index row too large
        (SqlStateError("42P01"), FailureKind.FATAL),  # undefined table
        (SqlStateError("42501"), FailureKind.FATAL),  # insufficient privilege
        (SqlStateError("XX000"), FailureKind.FATAL),  # internal error
        (ValueError("Out of range float values are not JSON compliant"), FailureKind.REJECTED),
        (OverflowError("date value out of range"), FailureKind.REJECTED),
        (UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogates"), FailureKind.REJECTED),
        (TypeError("a bug"), FailureKind.FATAL),
        (KeyError("a bug"), FailureKind.FATAL),
    ],
    ids=lambda v: v.name if isinstance(v, FailureKind) else f"{type(v).__name__}-{v}"[:40],
)
def test_classify_failure(exc: Exception, kind: FailureKind) -> None:
    assert classify_failure(exc) is kind


def test_first_line_is_one_storable_line() -> None:
    exc = ValueError('invalid byte sequence for encoding "UTF8": 0x00\nDETAIL: \x00 \ud800')
    assert first_line(exc) == 'invalid byte sequence for encoding "UTF8": 0x00'
    assert first_line(ValueError("a\x00b \ud800")) == "a\\x00b \\ud800"
    assert first_line(ValueError("")) == "ValueError"
    assert len(first_line(ValueError("x" * 1000))) == 300

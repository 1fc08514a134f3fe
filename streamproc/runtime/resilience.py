"""Retries with backoff and a circuit breaker around sink transactions and DLQ writes.

Delays are wall time. The clock, the sleep and the jitter's random source are
injected so the logic is tested without waiting. The breaker tracks whether
the sink can be reached: only failures the caller calls outages count
against it (FAULTS.md).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from enum import Enum
from typing import TypeVar

from streamproc.port_errors import adapter_error
from streamproc.runtime.plan import BreakerPolicy, RetryPolicy

log = logging.getLogger("streamproc.resilience")
T = TypeVar("T")


class BreakerState(Enum):
    """The three states of a circuit breaker."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitOpenError(RuntimeError):
    """The breaker is open: the call was not attempted."""


class CircuitBreaker:
    """Opens after `failure_threshold` consecutive failures; probes after the reset timeout."""

    def __init__(
        self,
        policy: BreakerPolicy,
        *,
        name: str = "sink",
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[BreakerState], None] | None = None,
    ) -> None:
        self._policy = policy
        self._name = name
        self._clock = clock
        self._on_change = on_change
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._half_open_attempts = 0
        #: Times the breaker opened since it was made (the progress record's).
        self.opened = 0

    @property
    def state(self) -> BreakerState:
        """The state now (an open breaker turns half-open once its timeout passed)."""
        if (
            self._state is BreakerState.OPEN
            and self._clock() - self._opened_at >= self._policy.reset_timeout_s
        ):
            self._set(BreakerState.HALF_OPEN)
            self._half_open_attempts = 0
        return self._state

    def seconds_until_probe(self) -> float:
        """Wall seconds until an open breaker lets a probe through (0 if not open)."""
        if self.state is not BreakerState.OPEN:
            return 0.0
        return max(0.0, self._policy.reset_timeout_s - (self._clock() - self._opened_at))

    def before_call(self) -> None:
        """Raise CircuitOpenError unless a call may go ahead now."""
        if not self._policy.enabled:
            return
        state = self.state
        if state is BreakerState.OPEN:
            raise CircuitOpenError(
                f"circuit breaker '{self._name}' is open; next probe in "
                f"{self.seconds_until_probe():.1f}s"
            )
        if state is BreakerState.HALF_OPEN:
            if self._half_open_attempts >= self._policy.half_open_max_attempts:
                raise CircuitOpenError(f"circuit breaker '{self._name}' is half-open, probe busy")
            self._half_open_attempts += 1

    def record_success(self) -> None:
        """A call reached the sink (it succeeded, or the sink answered with an error): close."""
        self._failures = 0
        if self._state is not BreakerState.CLOSED:
            self._set(BreakerState.CLOSED)

    def record_abandoned(self) -> None:
        """A call let through ended without an answer (cancelled): free its probe slot."""
        if self._state is BreakerState.HALF_OPEN and self._half_open_attempts > 0:
            self._half_open_attempts -= 1

    def record_failure(self) -> None:
        """A call failed: count it, open the breaker at the threshold or on a failed probe."""
        if not self._policy.enabled:
            return
        self._failures += 1
        if self._state is BreakerState.HALF_OPEN or (
            self._state is BreakerState.CLOSED and self._failures >= self._policy.failure_threshold
        ):
            self._opened_at = self._clock()
            self._set(BreakerState.OPEN)

    def _set(self, state: BreakerState) -> None:
        if state is self._state:
            return
        log.warning("circuit breaker '%s': %s -> %s", self._name, self._state.value, state.value)
        self._state = state
        if state is BreakerState.OPEN:
            self.opened += 1
        if self._on_change is not None:
            self._on_change(state)


def backoff_delays(policy: RetryPolicy, rng: random.Random | None = None) -> list[float]:
    """The wall-time delays before each retry (len = max_attempts - 1)."""
    if policy.strategy == "none" or policy.max_attempts <= 1:
        return []
    rng = rng or random.Random()
    delays: list[float] = []
    delay = policy.initial_delay_s
    for _ in range(policy.max_attempts - 1):
        base = min(delay, policy.max_delay_s)
        # Full jitter keeps workers that failed together from retrying together.
        delays.append(rng.uniform(0, base) if policy.jitter else base)
        if policy.strategy == "exponential":
            delay *= policy.multiplier
    return delays


#: The shortest wait between two tries to reach an unavailable sink, so that
#: retryConfig strategy "none" (or a zero delay) never becomes a busy loop.
MIN_OUTAGE_DELAY_S = 1.0


def outage_delay(policy: RetryPolicy, attempt: int) -> float:
    """Wall seconds to wait before try `attempt` (0-based) to reach a sink that is down.

    Follows the retry policy's growth (exponential or fixed) without jitter,
    never below MIN_OUTAGE_DELAY_S nor above the policy's cap.
    """
    cap = max(policy.max_delay_s, MIN_OUTAGE_DELAY_S)
    delay = policy.initial_delay_s
    if policy.strategy == "exponential":
        # Grow step by step so a long outage never overflows the float.
        for _ in range(attempt):
            delay *= policy.multiplier
            if delay >= cap:
                break
    return min(cap, max(MIN_OUTAGE_DELAY_S, delay))


def _always(exc: Exception) -> bool:
    return True


async def call_with_retry(
    operation: Callable[[], Awaitable[T]],
    policy: RetryPolicy,
    breaker: CircuitBreaker,
    *,
    what: str,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    is_outage: Callable[[Exception], bool] = _always,
    retry_if: Callable[[Exception], bool] = _always,
    rng: random.Random | None = None,
    on_retry: Callable[[], None] | None = None,
) -> T:
    """Run operation, retrying per policy; every attempt goes through the breaker.

    Args:
        operation: The call (a sink transaction, a DLQ write).
        policy: Attempts and delays (wall time).
        breaker: Asked before every attempt; told how each attempt ended.
        what: Names the call in log lines.
        sleep: Waits between attempts (injected in tests).
        is_outage: Whether a failure means the sink cannot be reached; only
            those count against the breaker (an answer, even an error, shows
            the sink is there).
        retry_if: Whether a failure is worth another attempt.
        rng: Random source of the jitter.
        on_retry: Told before each retry (the retries metric).

    Raises:
        The last exception when every attempt failed or it is not retried, or
        CircuitOpenError when the breaker lets no attempt through.
    """
    delays = backoff_delays(policy, rng)
    attempt = 0
    while True:
        breaker.before_call()
        try:
            result = await operation()
        except asyncio.CancelledError:
            breaker.record_abandoned()
            raise
        except Exception as exc:
            if is_outage(exc):
                breaker.record_failure()
            else:
                breaker.record_success()
            if attempt >= len(delays) or not retry_if(exc):
                raise
            log.warning(
                "%s failed (attempt %d of %d): %s; retrying in %.1fs",
                what,
                attempt + 1,
                len(delays) + 1,
                str(exc).splitlines()[0] if str(exc) else type(adapter_error(exc)).__name__,
                delays[attempt],
            )
            if on_retry is not None:
                on_retry()
            await sleep(delays[attempt])
            attempt += 1
            continue
        breaker.record_success()
        return result

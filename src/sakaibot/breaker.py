"""A circuit breaker per image model, so a failing worker is left alone for a while.

When a model's worker fails again and again (busy, unreachable, too slow), every
new job for it would only wait in the queue, use up the retry budget and fail
in the end. After ``failure_threshold`` jobs in a row end in such a
worker-unavailable failure, the breaker *opens*: new jobs for that model are
refused at once (with a "try again in about N min" message) instead of queued.
Once ``cooldown_s`` has passed, the breaker is *half-open*: exactly one job, the
probe, may go. If the probe succeeds the breaker closes; if the worker is still
unavailable it opens again for a fresh cooldown.

Only worker-unavailable failures count (see :func:`counts_as_unavailable`): a
filtered prompt, a bad request or refused credentials say nothing about whether
the worker is up. Time comes from an injected clock; there are no timers, the
state is worked out from the clock whenever it is asked for.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from sakaibot.errors import TransientWorkerError, WorkerGaveUp


@dataclass(frozen=True)
class BreakerSettings:
    """Open after ``failure_threshold`` worker-unavailable jobs in a row, for ``cooldown_s``."""

    failure_threshold: int = 3
    cooldown_s: float = 60.0

    def __post_init__(self) -> None:
        if self.failure_threshold < 1:
            raise ValueError(f"failure_threshold must be at least 1, not {self.failure_threshold}")
        if self.cooldown_s < 0:
            raise ValueError(f"cooldown_s must not be negative, not {self.cooldown_s}")


class BreakerState(StrEnum):
    """Where a breaker stands; it is worked out from the clock each time it is asked."""

    #: Jobs go to the worker as usual.
    CLOSED = "closed"
    #: The worker kept failing; new jobs are refused until the cooldown is over.
    OPEN = "open"
    #: The cooldown is over; one probe job may go to see whether the worker is back.
    HALF_OPEN = "half_open"


def counts_as_unavailable(error: BaseException) -> bool:
    """Whether a job's failure says the worker is unavailable (and so counts toward opening).

    True for transient failures (including timeouts) and for :class:`WorkerGaveUp`,
    the end of a retry budget spent on them; False for everything else. A failure
    that came back from a worker process is rebuilt as the same class
    (:func:`sakaibot.errors.from_wire`), so it counts the same.
    """
    return isinstance(error, TransientWorkerError | WorkerGaveUp)


class CircuitBreaker:
    """The breaker of one model: closed, open, or half-open with at most one probe out.

    Callers ask :meth:`allow` before starting a job and report how every job that
    was allowed ended, with :meth:`record_success` or :meth:`record_failure`; a
    probe that ends any other way (cancelled, an unexpected error) is given back
    with :meth:`release_probe`, or the model would wait for it for ever.
    """

    def __init__(self, settings: BreakerSettings, clock: Callable[[], float]) -> None:
        self._settings = settings
        self._clock = clock
        self._failures = 0
        self._opened_at_s: float | None = None
        self._probe_out = False
        self._opened_count = 0

    @property
    def settings(self) -> BreakerSettings:
        return self._settings

    @property
    def state(self) -> BreakerState:
        if self._opened_at_s is None:
            return BreakerState.CLOSED
        if self._clock() < self._opened_at_s + self._settings.cooldown_s:
            return BreakerState.OPEN
        return BreakerState.HALF_OPEN

    @property
    def consecutive_failures(self) -> int:
        """Counting failures in a row while closed (0 once the breaker has opened)."""
        return self._failures

    @property
    def opened_count(self) -> int:
        """How many times this breaker has opened (a probe that fails opens it again)."""
        return self._opened_count

    @property
    def reopens_at_s(self) -> float | None:
        """Clock time at which the probe may go while OPEN; ``None`` in any other state."""
        if self.state is not BreakerState.OPEN:
            return None
        assert self._opened_at_s is not None
        return self._opened_at_s + self._settings.cooldown_s

    def retry_after_s(self) -> float:
        """Seconds until the probe may go; 0 when the breaker is not OPEN."""
        reopens_at_s = self.reopens_at_s
        if reopens_at_s is None:
            return 0.0
        return max(reopens_at_s - self._clock(), 0.0)

    def allow(self) -> bool:
        """May a job start now? In HALF_OPEN only the first caller (the probe) is let through."""
        state = self.state
        if state is BreakerState.CLOSED:
            return True
        if state is BreakerState.OPEN:
            return False
        if self._probe_out:
            return False
        self._probe_out = True
        return True

    def release_probe(self) -> None:
        """The probe ended without a word on the worker: let the next job probe instead.

        For a probe that was cancelled or died of an unexpected error. Only the
        job that holds the probe calls this; in any state but HALF_OPEN it does
        nothing, as no probe is out then.
        """
        if self.state is BreakerState.HALF_OPEN:
            self._probe_out = False

    @property
    def probe_out(self) -> bool:
        """Whether a probe job is out now (HALF_OPEN, and the one job is running)."""
        return self._probe_out and self.state is BreakerState.HALF_OPEN

    def record_success(self) -> bool:
        """A job succeeded: close and reset. True exactly when this closed an open breaker."""
        was_open = self._opened_at_s is not None
        self._failures = 0
        self._opened_at_s = None
        self._probe_out = False
        return was_open

    def record_failure(self, *, counts: bool) -> bool:
        """A job failed; ``counts`` when the worker was unavailable (:func:`counts_as_unavailable`).

        Returns True exactly when this call opened the breaker, so the caller can
        tell waiting users once.
        """
        state = self.state
        if state is BreakerState.OPEN:
            # A job started before the breaker opened has finished; it tells nothing new.
            return False
        if state is BreakerState.HALF_OPEN:
            if not counts:
                # The probe ended for a reason that says nothing about the worker;
                # let the next caller probe instead.
                self._probe_out = False
                return False
            self._open()
            return True
        if not counts:
            return False
        self._failures += 1
        if self._failures >= self._settings.failure_threshold:
            self._open()
            return True
        return False

    def _open(self) -> None:
        self._opened_at_s = self._clock()
        self._failures = 0
        self._probe_out = False
        self._opened_count += 1


class Breakers:
    """The breakers of all models, made on first use with the same settings and clock."""

    def __init__(self, settings: BreakerSettings, clock: Callable[[], float]) -> None:
        self._settings = settings
        self._clock = clock
        self._by_model: dict[str, CircuitBreaker] = {}

    def get(self, model: str) -> CircuitBreaker:
        breaker = self._by_model.get(model)
        if breaker is None:
            breaker = CircuitBreaker(self._settings, self._clock)
            self._by_model[model] = breaker
        return breaker

    def states(self) -> dict[str, BreakerState]:
        """The state of every breaker made so far, by model name."""
        return {model: breaker.state for model, breaker in self._by_model.items()}

"""The per-model circuit breaker, on a clock the test controls."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sakaibot.breaker import (
    Breakers,
    BreakerSettings,
    BreakerState,
    CircuitBreaker,
    counts_as_unavailable,
)
from sakaibot.errors import (
    ContentFiltered,
    EnhancerError,
    GenerationError,
    ImageTooLarge,
    InvalidImage,
    JobCancelled,
    PermanentWorkerError,
    QuotaExhausted,
    RateLimited,
    StoreUnavailable,
    TransientWorkerError,
    WorkerAuthError,
    WorkerBadRequest,
    WorkerGaveUp,
    WorkerTimeout,
)
from tests.support.fakes import FakeClock

SETTINGS = BreakerSettings(failure_threshold=3, cooldown_s=60.0)


def make(clock: FakeClock, breaker_settings: BreakerSettings = SETTINGS) -> CircuitBreaker:
    return CircuitBreaker(breaker_settings, clock)


def opened(clock: FakeClock) -> CircuitBreaker:
    breaker = make(clock)
    for _ in range(SETTINGS.failure_threshold):
        breaker.record_failure(counts=True)
    assert breaker.state is BreakerState.OPEN
    return breaker


def test_default_settings() -> None:
    assert BreakerSettings() == BreakerSettings(failure_threshold=3, cooldown_s=60.0)


@pytest.mark.parametrize(("threshold", "cooldown_s"), [(0, 60.0), (-1, 60.0), (3, -1.0)])
def test_settings_reject_nonsense(threshold: int, cooldown_s: float) -> None:
    with pytest.raises(ValueError, match=r"failure_threshold|cooldown_s"):
        BreakerSettings(failure_threshold=threshold, cooldown_s=cooldown_s)


def test_closed_by_default() -> None:
    breaker = make(FakeClock())
    assert breaker.state is BreakerState.CLOSED
    assert breaker.allow()
    assert breaker.allow()
    assert breaker.reopens_at_s is None
    assert breaker.retry_after_s() == 0.0
    assert breaker.opened_count == 0


def test_opens_after_threshold_consecutive_counting_failures_not_before() -> None:
    clock = FakeClock()
    breaker = make(clock)
    assert breaker.record_failure(counts=True) is False
    assert breaker.record_failure(counts=True) is False
    assert breaker.consecutive_failures == 2
    assert breaker.opened_count == 0  # not opened after N-1
    assert breaker.allow()
    assert breaker.record_failure(counts=True) is True
    assert breaker.state is BreakerState.OPEN
    assert breaker.reopens_at_s == clock() + 60.0
    assert breaker.opened_count == 1


def test_threshold_of_one_opens_on_the_first_failure() -> None:
    breaker = make(FakeClock(), BreakerSettings(failure_threshold=1, cooldown_s=5.0))
    assert breaker.record_failure(counts=True) is True
    assert breaker.state is BreakerState.OPEN


def test_a_success_in_between_resets_the_count() -> None:
    breaker = make(FakeClock())
    breaker.record_failure(counts=True)
    breaker.record_failure(counts=True)
    assert breaker.record_success() is False  # it was closed: nothing to announce
    assert breaker.consecutive_failures == 0
    breaker.record_failure(counts=True)
    breaker.record_failure(counts=True)
    assert breaker.state is BreakerState.CLOSED
    assert breaker.record_failure(counts=True) is True


def test_non_counting_failures_do_not_open_nor_reset() -> None:
    breaker = make(FakeClock())
    for _ in range(10):
        assert breaker.record_failure(counts=False) is False
    assert breaker.state is BreakerState.CLOSED
    breaker.record_failure(counts=True)
    breaker.record_failure(counts=True)
    breaker.record_failure(counts=False)  # a filtered prompt in between changes nothing
    assert breaker.consecutive_failures == 2
    assert breaker.state is BreakerState.CLOSED
    assert breaker.record_failure(counts=True) is True


def test_open_blocks_everyone() -> None:
    clock = FakeClock()
    breaker = opened(clock)
    assert not breaker.allow()
    clock.advance(59.9)
    assert breaker.state is BreakerState.OPEN
    assert not breaker.allow()
    assert not breaker.allow()


def test_late_failures_while_open_change_nothing() -> None:
    clock = FakeClock()
    breaker = opened(clock)
    reopens_at_s = breaker.reopens_at_s
    clock.advance(30.0)
    assert breaker.record_failure(counts=True) is False
    assert breaker.record_failure(counts=False) is False
    assert breaker.reopens_at_s == reopens_at_s
    assert breaker.opened_count == 1


def test_after_the_cooldown_exactly_one_probe_is_allowed() -> None:
    clock = FakeClock()
    breaker = opened(clock)
    clock.advance(60.0)
    assert breaker.state is BreakerState.HALF_OPEN
    assert breaker.reopens_at_s is None
    assert breaker.retry_after_s() == 0.0
    assert breaker.allow() is True
    assert breaker.allow() is False
    clock.advance(1000.0)  # time alone does not free the probe slot
    assert breaker.allow() is False
    assert breaker.state is BreakerState.HALF_OPEN


def test_probe_success_closes() -> None:
    clock = FakeClock()
    breaker = opened(clock)
    clock.advance(60.0)
    assert breaker.allow()
    assert breaker.record_success() is True
    assert breaker.state is BreakerState.CLOSED
    assert breaker.allow()
    assert breaker.allow()
    assert breaker.consecutive_failures == 0
    assert breaker.record_success() is False


def test_a_late_success_while_open_closes_too() -> None:
    clock = FakeClock()
    breaker = opened(clock)
    clock.advance(10.0)
    assert breaker.record_success() is True
    assert breaker.state is BreakerState.CLOSED


def test_probe_counting_failure_reopens_with_a_fresh_cooldown() -> None:
    clock = FakeClock()
    breaker = opened(clock)
    clock.advance(75.0)
    assert breaker.allow()
    clock.advance(5.0)
    assert breaker.record_failure(counts=True) is True
    assert breaker.state is BreakerState.OPEN
    assert breaker.reopens_at_s == clock() + 60.0
    assert breaker.retry_after_s() == pytest.approx(60.0)
    assert breaker.opened_count == 2
    assert not breaker.allow()
    clock.advance(60.0)
    assert breaker.allow()
    assert not breaker.allow()


def test_probe_non_counting_failure_frees_the_probe_slot() -> None:
    clock = FakeClock()
    breaker = opened(clock)
    clock.advance(60.0)
    assert breaker.allow()
    assert not breaker.allow()
    assert breaker.record_failure(counts=False) is False
    assert breaker.state is BreakerState.HALF_OPEN
    assert breaker.opened_count == 1
    assert breaker.allow()  # the next caller is the new probe
    assert not breaker.allow()


def test_a_released_probe_lets_the_next_job_probe() -> None:
    clock = FakeClock()
    breaker = opened(clock)
    clock.advance(60.0)
    assert breaker.allow()
    assert breaker.probe_out
    assert not breaker.allow()
    breaker.release_probe()  # the probe was cancelled
    assert not breaker.probe_out
    assert breaker.state is BreakerState.HALF_OPEN
    assert breaker.allow()  # the next caller is the new probe
    assert not breaker.allow()


def test_releasing_when_no_probe_is_out_changes_nothing() -> None:
    clock = FakeClock()
    breaker = make(clock)
    breaker.release_probe()
    assert breaker.state is BreakerState.CLOSED
    assert not breaker.probe_out
    breaker = opened(clock)
    breaker.release_probe()
    assert breaker.state is BreakerState.OPEN
    assert not breaker.allow()


def test_retry_after_counts_down_with_the_clock() -> None:
    clock = FakeClock()
    breaker = opened(clock)
    assert breaker.retry_after_s() == pytest.approx(60.0)
    clock.advance(15.0)
    assert breaker.retry_after_s() == pytest.approx(45.0)
    clock.advance(44.5)
    assert breaker.retry_after_s() == pytest.approx(0.5)
    clock.advance(0.5)
    assert breaker.retry_after_s() == 0.0
    clock.advance(100.0)
    assert breaker.retry_after_s() == 0.0


def test_opened_count_counts_every_opening() -> None:
    clock = FakeClock()
    breaker = make(clock, BreakerSettings(failure_threshold=2, cooldown_s=10.0))
    for round_ in range(1, 4):
        breaker.record_failure(counts=True)
        assert breaker.record_failure(counts=True) is True
        assert breaker.opened_count == round_
        clock.advance(10.0)
        assert breaker.allow()
        assert breaker.record_success() is True
    assert breaker.opened_count == 3


def test_zero_cooldown_is_half_open_at_once() -> None:
    breaker = make(FakeClock(), BreakerSettings(failure_threshold=1, cooldown_s=0.0))
    assert breaker.record_failure(counts=True) is True
    assert breaker.state is BreakerState.HALF_OPEN
    assert breaker.allow()
    assert not breaker.allow()


def test_breakers_are_independent_per_model() -> None:
    clock = FakeClock()
    breakers = Breakers(SETTINGS, clock)
    assert breakers.states() == {}
    flux = breakers.get("flux")
    assert breakers.get("flux") is flux
    sdxl = breakers.get("sdxl")
    assert sdxl is not flux
    for _ in range(3):
        flux.record_failure(counts=True)
    assert breakers.states() == {"flux": BreakerState.OPEN, "sdxl": BreakerState.CLOSED}
    assert sdxl.allow()
    assert not flux.allow()
    clock.advance(60.0)
    assert breakers.states() == {"flux": BreakerState.HALF_OPEN, "sdxl": BreakerState.CLOSED}
    assert flux.settings is sdxl.settings is SETTINGS


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (TransientWorkerError("503", model="flux"), True),
        (TransientWorkerError("429", model="flux", retry_after_s=5.0), True),
        (WorkerTimeout("slow", model="flux"), True),
        (WorkerGaveUp("3 tries", model="flux", attempts=3), True),
        (ContentFiltered("nsfw", model="flux"), False),
        (WorkerBadRequest("400", model="flux"), False),
        (WorkerAuthError("401", model="flux"), False),
        (QuotaExhausted("daily", model="flux"), False),
        (InvalidImage("html", model="flux"), False),
        (ImageTooLarge(10, 5, model="flux"), False),
        (PermanentWorkerError("500", model="flux"), False),
        (GenerationError("??", model="flux"), False),
        (EnhancerError("llm"), False),
        (StoreUnavailable("disk"), False),
        (JobCancelled(), False),
        (RateLimited(5.0, 10, 60.0), False),
        (TimeoutError(), False),
        (ConnectionError(), False),
        (ValueError("x"), False),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, BaseException) else None,
)
def test_counts_as_unavailable(error: BaseException, expected: bool) -> None:
    assert counts_as_unavailable(error) is expected


# --- the property: one probe at a time, and the state machine stays consistent ---

EVENTS = st.one_of(
    st.just(("allow", 0)),
    st.just(("success", 0)),
    st.just(("counting", 0)),
    st.just(("non_counting", 0)),
    st.tuples(st.just("advance"), st.integers(min_value=0, max_value=120)),
)


@settings(max_examples=300)
@given(
    threshold=st.integers(min_value=1, max_value=4),
    cooldown=st.integers(min_value=0, max_value=90),
    events=st.lists(EVENTS, max_size=80),
)
def test_never_two_probes_and_always_a_known_state(
    threshold: int, cooldown: int, events: list[tuple[str, int]]
) -> None:
    clock = FakeClock()
    breaker = make(clock, BreakerSettings(failure_threshold=threshold, cooldown_s=float(cooldown)))
    probe_out = False  # a caller was let through while HALF_OPEN and has not reported
    for kind, seconds in events:
        before = breaker.state
        opened_before = breaker.opened_count
        if kind == "allow":
            allowed = breaker.allow()
            if before is BreakerState.HALF_OPEN:
                if allowed:
                    assert not probe_out, "two callers let through while half-open"
                else:
                    assert probe_out, "no probe out, yet the caller was refused"
                probe_out = True
            else:
                assert allowed is (before is BreakerState.CLOSED)
        elif kind == "success":
            assert breaker.record_success() is (before is not BreakerState.CLOSED)
            probe_out = False
            assert breaker.state is BreakerState.CLOSED
        elif kind in {"counting", "non_counting"}:
            did_open = breaker.record_failure(counts=kind == "counting")
            probe_out = False
            assert breaker.opened_count == opened_before + int(did_open)
            if did_open:
                assert kind == "counting"
                assert before is not BreakerState.OPEN
                if cooldown > 0:
                    assert breaker.reopens_at_s == clock() + cooldown
        else:
            clock.advance(float(seconds))
        state = breaker.state
        assert state in set(BreakerState)
        assert (breaker.retry_after_s() > 0) is (state is BreakerState.OPEN)
        assert (breaker.reopens_at_s is None) is (state is not BreakerState.OPEN)
        assert 0 <= breaker.consecutive_failures < threshold


def test_a_failure_from_another_process_counts_as_its_class() -> None:
    from sakaibot.errors import from_wire

    assert counts_as_unavailable(from_wire("worker_unavailable", "busy", "503", model="F"))
    assert counts_as_unavailable(from_wire("worker_timeout", "slow", "timeout", model="F"))
    assert not counts_as_unavailable(from_wire("content_filtered", "nsfw", "filtered", model="F"))

"""The sliding-window limiter, on a clock the test controls."""

from __future__ import annotations

import pytest

from sakaibot.limits import (
    RateWindow,
    RejectionPolicy,
    RejectionThrottle,
    RejectionVerdict,
    SlidingWindowLimiter,
    parse_limit_spec,
)
from tests.support.fakes import FakeClock


def test_parse_several_windows() -> None:
    assert parse_limit_spec("10/1m, 50/1h,200/1d") == [
        RateWindow(10, 60.0),
        RateWindow(50, 3600.0),
        RateWindow(200, 86400.0),
    ]
    assert parse_limit_spec("5/30s") == [RateWindow(5, 30.0)]
    assert parse_limit_spec("3/m") == [RateWindow(3, 60.0)]


@pytest.mark.parametrize("spec", ["off", "OFF", "", "none"])
def test_parse_off(spec: str) -> None:
    assert parse_limit_spec(spec) == []


@pytest.mark.parametrize("spec", ["10", "10/1w", "ten/1m", "0/1m", "10/0m", "10/1m;5/1h"])
def test_parse_rejects_with_an_example(spec: str) -> None:
    with pytest.raises(ValueError, match=r"10/1m|at least 1"):
        parse_limit_spec(spec)


def test_original_limit_ten_per_minute_slides() -> None:
    clock = FakeClock()
    limiter = SlidingWindowLimiter(parse_limit_spec("10/1m"), clock)
    for _ in range(10):
        assert limiter.check("ann") is None
        limiter.record("ann")
        clock.advance(1.0)
    denial = limiter.check("ann")
    assert denial is not None
    # The first request was at t=0; now is t=10; it leaves the window at t=60.
    assert denial.retry_after_s == pytest.approx(50.0)
    clock.advance(50.0)
    assert limiter.check("ann") is None


def test_check_records_nothing() -> None:
    """Only accepted requests count (defect 5): checking alone never uses a slot."""
    clock = FakeClock()
    limiter = SlidingWindowLimiter([RateWindow(1, 60.0)], clock)
    for _ in range(5):
        assert limiter.check("ann") is None
    limiter.record("ann")
    assert limiter.check("ann") is not None


def test_users_are_independent() -> None:
    clock = FakeClock()
    limiter = SlidingWindowLimiter([RateWindow(1, 60.0)], clock)
    limiter.record("ann")
    assert limiter.check("ann") is not None
    assert limiter.check("bob") is None


def test_longest_wait_of_several_windows_wins() -> None:
    clock = FakeClock()
    limiter = SlidingWindowLimiter(parse_limit_spec("2/1m,3/1h"), clock)
    for _ in range(3):
        limiter.record("ann")
        clock.advance(61.0)
    denial = limiter.check("ann")
    assert denial is not None
    assert denial.window == RateWindow(3, 3600.0)
    assert denial.retry_after_s == pytest.approx(3600.0 - 3 * 61.0)


def test_refund_gives_the_slot_back() -> None:
    clock = FakeClock()
    limiter = SlidingWindowLimiter([RateWindow(1, 60.0)], clock)
    stamp = limiter.record("ann")
    assert limiter.check("ann") is not None
    assert limiter.refund("ann", stamp) is True
    assert limiter.check("ann") is None
    assert limiter.refund("ann", stamp) is False


def test_memory_is_released_when_windows_empty() -> None:
    clock = FakeClock()
    limiter = SlidingWindowLimiter([RateWindow(5, 60.0)], clock)
    for user in range(100):
        limiter.record(f"user{user}")
    assert limiter.tracked_keys() == 100
    clock.advance(61.0)
    for user in range(100):
        limiter.check(f"user{user}")
    assert limiter.tracked_keys() == 0


def test_off_never_limits_and_keeps_nothing() -> None:
    limiter = SlidingWindowLimiter([], FakeClock())
    for _ in range(1000):
        limiter.record("ann")
    assert limiter.check("ann") is None
    assert limiter.tracked_keys() == 0


# -- the rejection throttle ----------------------------------------------------------


def test_rejections_are_answered_then_one_slow_down_then_silence_until_the_window_passes() -> None:
    clock = FakeClock()
    throttle = RejectionThrottle(RejectionPolicy(replies=3, window_s=60.0), clock)
    verdicts = [throttle.verdict("mallory") for _ in range(6)]
    assert verdicts == [RejectionVerdict.REPLY] * 3 + [
        RejectionVerdict.SLOW_DOWN,
        RejectionVerdict.SILENT,
        RejectionVerdict.SILENT,
    ]
    assert throttle.verdict("ann") is RejectionVerdict.REPLY  # per user
    clock.advance(59.9)
    assert throttle.verdict("mallory") is RejectionVerdict.SILENT
    clock.advance(0.1)
    assert throttle.verdict("mallory") is RejectionVerdict.REPLY


def test_rejections_spread_out_are_always_answered() -> None:
    clock = FakeClock()
    throttle = RejectionThrottle(RejectionPolicy(replies=3, window_s=60.0), clock)
    for _ in range(20):
        assert throttle.verdict("ann") is RejectionVerdict.REPLY
        clock.advance(20.01)  # never a fourth within any 60 s


def test_the_throttle_forgets_users_once_their_window_passed() -> None:
    clock = FakeClock()
    throttle = RejectionThrottle(RejectionPolicy(replies=1, window_s=10.0), clock)
    for n in range(100):
        throttle.verdict(f"user{n}")
        throttle.verdict(f"user{n}")
    assert throttle.tracked_keys() == 100
    clock.advance(10.0)
    throttle.verdict("late")
    assert throttle.tracked_keys() == 1


@pytest.mark.parametrize(("replies", "window_s"), [(-1, 60.0), (3, 0.0), (3, -1.0)])
def test_a_rejection_policy_refuses_nonsense(replies: int, window_s: float) -> None:
    with pytest.raises(ValueError, match="must"):
        RejectionPolicy(replies=replies, window_s=window_s)


def test_several_requests_at_once_fit_whole_or_not_at_all() -> None:
    clock = FakeClock(0.0)
    limiter = SlidingWindowLimiter([RateWindow(5, 60.0)], clock)
    limiter.record("ann", 2)
    clock.advance(10)
    limiter.record("ann")
    # 3 counted: 2 more fit, 3 do not; the third slot frees when the newest of
    # the first two leaves the window (stamp 0, at 60 s).
    assert limiter.check("ann", 2) is None
    denial = limiter.check("ann", 3)
    assert denial is not None
    assert denial.retry_after_s == 50.0
    # More than the limit never fits: the whole window.
    never = limiter.check("ann", 6)
    assert never is not None
    assert never.retry_after_s == 60.0
    # Each refund gives back one of the requests counted together.
    stamp = limiter.record("ann", 2)
    assert limiter.refund("ann", stamp)
    assert limiter.check("ann", 1) is None
    assert limiter.check("ann", 2) is not None

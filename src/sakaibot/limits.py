"""Per-user sliding-window rate limits, several windows at once, with an injected clock.

Only accepted requests count: callers first :meth:`SlidingWindowLimiter.check`,
then run every other admission check, and only then :meth:`~SlidingWindowLimiter.record`.
A generation that fails through no fault of the user is given back with
:meth:`~SlidingWindowLimiter.refund` (defect 5 of the original design); a job
the user cancelled keeps its slot. The limiter belongs to the image feature
alone; nothing else shares it.

:class:`RejectionThrottle` bounds the other side: how many refusals one user
hears in a window before one "slow down" and then silence.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_MAX_COUNT = 1_000_000
_MAX_WINDOW_S = 365 * 86400
_WINDOW_RE = re.compile(r"^\s*(\d+)\s*/\s*(\d*)\s*([smhd])\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class RateWindow:
    """At most ``limit`` accepted requests in any ``window_s`` seconds."""

    limit: int
    window_s: float


def parse_limit_spec(spec: str) -> list[RateWindow]:
    """Parse ``"10/1m,50/1h,200/1d"``; ``"off"`` (or an empty string) means no limit.

    Raises :class:`ValueError` with a message that says what a valid value looks like.
    """
    text = spec.strip().lower()
    if text in {"", "off", "none", "0"}:
        return []
    windows: list[RateWindow] = []
    for part in text.split(","):
        match = _WINDOW_RE.match(part)
        if match is None:
            raise ValueError(
                f"{part.strip()!r} is not a limit; write COUNT/WINDOW like "
                "10/1m, 50/1h or 200/1d (s, m, h, d), comma-separated, or 'off'"
            )
        count = int(match.group(1))
        multiple = int(match.group(2) or "1")
        if count < 1 or multiple < 1:
            raise ValueError(f"{part.strip()!r}: count and window must be at least 1")
        window_s = multiple * _UNIT_S[match.group(3)]
        if count > _MAX_COUNT or window_s > _MAX_WINDOW_S:
            raise ValueError(
                f"{part.strip()!r} is out of range: at most {_MAX_COUNT} requests "
                "in a window of at most 365d"
            )
        windows.append(RateWindow(limit=count, window_s=float(window_s)))
    return windows


@dataclass(frozen=True)
class Denial:
    """Why a request may not be accepted now, and when it may."""

    retry_after_s: float
    window: RateWindow
    #: The window is ``IMAGE_GLOBAL_LIMITS``', all users' together, not the user's own.
    everyone: bool = False


#: The key under which the requests of all users together are counted
#: (``IMAGE_GLOBAL_LIMITS``); no user id can take this form.
EVERYONE_KEY = "*everyone*"
#: How many stamps of the everyone-window :class:`CombinedAllowance` remembers
#: for refunds; an older one is given back by the user's own stamp.
_MAX_PAIRED_STAMPS = 4096


class SlidingWindowLimiter:
    """Sliding windows per key (a user id), in memory, pruned as time passes.

    Memory is bounded by the accepted requests inside the longest window;
    a key with no request left in any window is forgotten.
    """

    def __init__(self, windows: list[RateWindow], clock: Callable[[], float]) -> None:
        self._windows = sorted(windows, key=lambda w: w.window_s)
        self._longest_s = self._windows[-1].window_s if self._windows else 0.0
        self._clock = clock
        self._stamps: dict[Hashable, list[float]] = {}

    @property
    def enabled(self) -> bool:
        return bool(self._windows)

    @property
    def windows(self) -> list[RateWindow]:
        return list(self._windows)

    def _pruned(self, key: Hashable, now: float) -> list[float]:
        stamps = self._stamps.get(key)
        if not stamps:
            return []
        cut = bisect.bisect_right(stamps, now - self._longest_s)
        if cut:
            del stamps[:cut]
        if not stamps:
            del self._stamps[key]
        return stamps

    def check(self, key: Hashable, count: int = 1) -> Denial | None:
        """``None`` when ``count`` more requests fit every window now; records nothing.

        A ``count`` above a window's limit never fits: its denial waits the whole window.
        """
        if not self._windows:
            return None
        now = self._clock()
        stamps = self._pruned(key, now)
        worst: Denial | None = None
        for window in self._windows:
            start = bisect.bisect_right(stamps, now - window.window_s)
            in_window = len(stamps) - start
            if in_window + count > window.limit:
                # The slots free when the newest request that still blocks leaves the window.
                blocking = len(stamps) - (window.limit - count) - 1
                retry_after_s = (
                    stamps[blocking] + window.window_s - now
                    if 0 <= blocking < len(stamps) and count <= window.limit
                    else window.window_s
                )
                if worst is None or retry_after_s > worst.retry_after_s:
                    worst = Denial(retry_after_s=max(retry_after_s, 0.0), window=window)
        return worst

    def record(self, key: Hashable, count: int = 1) -> float:
        """Count ``count`` accepted requests; returns their stamp, the token for
        :meth:`refund` (each refund gives back one of them)."""
        now = self._clock()
        if self._windows:
            stamps = self._stamps.setdefault(key, [])
            for _ in range(count):
                bisect.insort(stamps, now)
        return now

    def restore(self, key: Hashable, stamp: float) -> None:
        """Count a request accepted before a restart (read back from the store)."""
        if self._windows:
            bisect.insort(self._stamps.setdefault(key, []), stamp)

    def refund(self, key: Hashable, stamp: float) -> bool:
        """Give back the request recorded at ``stamp``; ``False`` if it already left."""
        stamps = self._stamps.get(key)
        if not stamps:
            return False
        index = bisect.bisect_left(stamps, stamp)
        if index < len(stamps) and stamps[index] == stamp:
            del stamps[index]
            if not stamps:
                del self._stamps[key]
            return True
        return False

    def tracked_keys(self) -> int:
        """How many keys hold stamps (for tests of bounded memory)."""
        return len(self._stamps)


class Allowance(Protocol):
    """Where the rate windows live: this process, or a store shared by several."""

    async def admit(self, key: str, count: int = 1) -> Denial | float:
        """Check every window and, when ``count`` requests fit, count them (one step).

        Returns the :class:`Denial`, or the stamp to give back with :meth:`refund`
        (once per request: an album's images are refunded one by one).
        """
        ...

    def refund(self, key: str, stamp: float) -> None:
        """Give a counted request back (it failed, or was not queued after all)."""
        ...


class LocalAllowance:
    """The windows of one process (with the store keeping them across restarts)."""

    def __init__(self, limiter: SlidingWindowLimiter) -> None:
        self.limiter = limiter

    async def admit(self, key: str, count: int = 1) -> Denial | float:
        # No await between the check and the count: atomic within the event loop.
        denial = self.limiter.check(key, count)
        return denial if denial is not None else self.limiter.record(key, count)

    def refund(self, key: str, stamp: float) -> None:
        self.limiter.refund(key, stamp)


class CombinedAllowance:
    """A user's own windows and all users' windows (``IMAGE_GLOBAL_LIMITS``) as one.

    A request is counted in both or in neither: when the windows of everyone
    are full, the user's slots are given straight back. The stamp handed out is
    the user's; the everyone-stamp is paired with it for :meth:`refund` (bounded;
    after a restart both are the job's creation time, as the store keeps it).
    An album's ``count`` images share one stamp and are refunded one by one, so
    the pairing remembers how many are still counted.
    """

    def __init__(self, user: Allowance, everyone: Allowance) -> None:
        self._user = user
        self._everyone = everyone
        #: (key, user stamp) -> (everyone stamp, images still counted under it).
        self._paired: dict[tuple[str, float], tuple[float, int]] = {}

    async def admit(self, key: str, count: int = 1) -> Denial | float:
        stamp = await self._user.admit(key, count)
        if isinstance(stamp, Denial):
            return stamp
        everyone = await self._everyone.admit(EVERYONE_KEY, count)
        if isinstance(everyone, Denial):
            for _ in range(count):
                self._user.refund(key, stamp)
            return Denial(everyone.retry_after_s, everyone.window, everyone=True)
        held = self._paired.get((key, stamp))
        if held is not None and held[0] == everyone:
            count += held[1]  # two requests of one user in the same instant
        elif len(self._paired) >= _MAX_PAIRED_STAMPS:
            del self._paired[next(iter(self._paired))]  # the oldest pairing
        self._paired[(key, stamp)] = (everyone, count)
        return stamp

    def refund(self, key: str, stamp: float) -> None:
        self._user.refund(key, stamp)
        held = self._paired.get((key, stamp))
        if held is None:
            self._everyone.refund(EVERYONE_KEY, stamp)
            return
        everyone, counted = held
        if counted > 1:
            self._paired[(key, stamp)] = (everyone, counted - 1)
        else:
            del self._paired[(key, stamp)]
        self._everyone.refund(EVERYONE_KEY, everyone)


@dataclass(frozen=True)
class RejectionPolicy:
    """How many refusals a user hears per ``window_s`` before one "slow down" and silence.

    Every refusal is a message sent from the owner's account, so one user
    flooding a group with bad commands would make the owner flood it too.
    ``replies`` of 0 turns the throttle off (every refusal is answered).
    """

    replies: int = 3
    window_s: float = 60.0

    def __post_init__(self) -> None:
        if self.replies < 0:
            raise ValueError(f"replies must not be negative, not {self.replies}")
        if self.window_s <= 0:
            raise ValueError(f"window_s must be positive, not {self.window_s}")


class RejectionVerdict(StrEnum):
    """What to do with one refusal."""

    #: Answer it as usual.
    REPLY = "reply"
    #: Answer with the one "slow down" message instead.
    SLOW_DOWN = "slow_down"
    #: Say nothing: the user was told to slow down and the window has not passed.
    SILENT = "silent"


class RejectionThrottle:
    """Counts the refusals answered per user, on an injected clock.

    Up to ``replies`` refusals in any ``window_s`` are answered; the next one
    gets the "slow down" message, and the user's refusals after it go
    unanswered until ``window_s`` has passed since that message. Memory holds
    only users refused within the last window.
    """

    def __init__(self, policy: RejectionPolicy, clock: Callable[[], float]) -> None:
        self._policy = policy
        self._clock = clock
        self._answered: dict[Hashable, list[float]] = {}
        self._silent_until_s: dict[Hashable, float] = {}

    @property
    def policy(self) -> RejectionPolicy:
        return self._policy

    def verdict(self, key: Hashable) -> RejectionVerdict:
        """Count one refusal of ``key`` and say how to answer it."""
        if self._policy.replies == 0:
            return RejectionVerdict.REPLY
        now_s = self._clock()
        self._forget(now_s)
        if key in self._silent_until_s:
            return RejectionVerdict.SILENT
        answered = self._answered.setdefault(key, [])
        if len(answered) < self._policy.replies:
            answered.append(now_s)
            return RejectionVerdict.REPLY
        del self._answered[key]
        self._silent_until_s[key] = now_s + self._policy.window_s
        return RejectionVerdict.SLOW_DOWN

    def _forget(self, now_s: float) -> None:
        """Drop silences that are over and answers that left the window."""
        cut_s = now_s - self._policy.window_s
        for key in [k for k, until_s in self._silent_until_s.items() if until_s <= now_s]:
            del self._silent_until_s[key]
        for key in list(self._answered):
            stamps = self._answered[key]
            del stamps[: bisect.bisect_right(stamps, cut_s)]
            if not stamps:
                del self._answered[key]

    def tracked_keys(self) -> int:
        """How many users are remembered (for tests of bounded memory)."""
        return len(self._answered.keys() | self._silent_until_s.keys())

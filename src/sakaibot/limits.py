"""Per-user sliding-window rate limits, several windows at once, with an injected clock.

Only accepted requests count: callers first :meth:`SlidingWindowLimiter.check`,
then run every other admission check, and only then :meth:`~SlidingWindowLimiter.record`.
A generation that fails through no fault of the user is given back with
:meth:`~SlidingWindowLimiter.refund` (defect 5 of the original design). The
limiter belongs to the image feature alone; nothing else shares it.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Callable, Hashable
from dataclasses import dataclass
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

    def check(self, key: Hashable) -> Denial | None:
        """``None`` when one more request fits every window now; records nothing."""
        if not self._windows:
            return None
        now = self._clock()
        stamps = self._pruned(key, now)
        worst: Denial | None = None
        for window in self._windows:
            start = bisect.bisect_right(stamps, now - window.window_s)
            in_window = len(stamps) - start
            if in_window >= window.limit:
                # The slot frees when the oldest request that still blocks leaves the window.
                oldest_blocking = stamps[len(stamps) - window.limit]
                retry_after_s = oldest_blocking + window.window_s - now
                if worst is None or retry_after_s > worst.retry_after_s:
                    worst = Denial(retry_after_s=max(retry_after_s, 0.0), window=window)
        return worst

    def record(self, key: Hashable) -> float:
        """Count one accepted request; returns its stamp, the token for :meth:`refund`."""
        now = self._clock()
        if self._windows:
            stamps = self._stamps.setdefault(key, [])
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

    async def admit(self, key: str) -> Denial | float:
        """Check every window and, when the request fits, count it (one step).

        Returns the :class:`Denial`, or the stamp to give back with :meth:`refund`.
        """
        ...

    def refund(self, key: str, stamp: float) -> None:
        """Give a counted request back (it failed, or was not queued after all)."""
        ...


class LocalAllowance:
    """The windows of one process (with the store keeping them across restarts)."""

    def __init__(self, limiter: SlidingWindowLimiter) -> None:
        self.limiter = limiter

    async def admit(self, key: str) -> Denial | float:
        # No await between the check and the count: atomic within the event loop.
        denial = self.limiter.check(key)
        return denial if denial is not None else self.limiter.record(key)

    def refund(self, key: str, stamp: float) -> None:
        self.limiter.refund(key, stamp)

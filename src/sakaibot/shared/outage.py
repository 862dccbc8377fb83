"""Warnings that the shared store is unreachable, at most one per interval."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

logger = logging.getLogger(__name__)


class OutageLog:
    """Warnings that the shared queue is unreachable, at most one per ``interval_s``.

    During an outage every lane, listener and waiting request retries on its
    own; each warning would otherwise be logged by each of them, many times a
    second. The ones held back are counted in the next warning that goes out.
    One is shared by everything of a process (front end and local worker).
    """

    def __init__(
        self, clock: Callable[[], float] = time.monotonic, *, interval_s: float = 1.0
    ) -> None:
        self._clock = clock
        self._interval_s = interval_s
        self._last_s: float | None = None
        self._held_back = 0

    def warn(self, message: str, *args: object) -> None:
        now_s = self._clock()
        if self._last_s is not None and now_s - self._last_s < self._interval_s:
            self._held_back += 1
            return
        self._last_s = now_s
        if self._held_back:
            message += " (and %d more such warnings)"
            args = (*args, self._held_back)
            self._held_back = 0
        logger.warning(message, *args)

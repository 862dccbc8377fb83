"""The rate windows of front ends that share them, kept on the Redis clock."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from sakaibot.limits import Denial, RateWindow
from sakaibot.shared.interfaces import SharedLimits

logger = logging.getLogger(__name__)


class SharedAllowance:
    """The :class:`~sakaibot.limits.Allowance` of front ends that share their limits.

    No clock of its own: the shared store records and compares requests on
    one clock (Redis's), so a front end whose clock is off neither lets a user
    through early nor holds them back.
    """

    def __init__(self, shared: SharedLimits, windows: list[RateWindow]) -> None:
        self._shared = shared
        self._windows = windows
        #: Refunds on their way to Redis, per key.
        self._refunding: dict[str, set[asyncio.Task[bool]]] = {}

    async def admit(self, key: str, count: int = 1) -> Denial | float:
        # A slot this front end gave back must be back before the next request
        # of the same user is counted (each refund is bounded by the reply timeout).
        pending = self._refunding.get(key)
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
        return await self._shared.admit(key, self._windows, count)

    def refund(self, key: str, stamp: float) -> None:
        task = asyncio.get_running_loop().create_task(self._shared.refund(key, stamp))
        pending = self._refunding.setdefault(key, set())
        pending.add(task)

        def done(finished: asyncio.Task[bool]) -> None:
            pending.discard(finished)
            if not pending:
                self._refunding.pop(key, None)
            _log_failure(finished)

        task.add_done_callback(done)


def _log_failure(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.warning("could not give back a rate-limit slot: %s", task.exception())

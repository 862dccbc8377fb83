"""Bounded stops: waiting for tasks and events without trusting a cancel to be seen.

A cancel can be lost on Python 3.11: ``asyncio.wait_for`` swallows one that
lands as its inner wait completes, and a library that turns a cancel into its
own timeout error hands the caller an ordinary failure to retry. A stop that
cancels a task and then awaits it may therefore wait for as long as the task
chooses to run (a job waiting an hour for its answer). Everything here waits
with a deadline instead, and says what it left behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Collection
from typing import Any

logger = logging.getLogger(__name__)


async def wait_event(event: asyncio.Event, timeout_s: float) -> bool:
    """Wait for ``event`` at most ``timeout_s``; whether it is set.

    Unlike ``asyncio.wait_for(event.wait(), ...)`` on Python 3.11, a cancel of
    the caller always propagates (``asyncio.timeout`` tells its own expiry
    from a cancel from outside).
    """
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout_s):
            await event.wait()
    return event.is_set()


async def stop_tasks(
    tasks: Collection[asyncio.Task[Any]],
    *,
    timeout_s: float,
    what: str,
    told_s: float = 0.0,
) -> list[asyncio.Task[Any]]:
    """Stop ``tasks`` within ``timeout_s`` in all; the ones still running then are left behind.

    Tasks already told to stop (by an event they watch) get ``told_s`` to end by
    themselves; the rest are cancelled, and those still running halfway to the
    deadline (a cancel lost, or turned into an error and handled) are cancelled
    once more. Whatever runs at the deadline is named in a warning and returned.
    Never raises the tasks' own errors.
    """
    loop = asyncio.get_running_loop()
    deadline_s = loop.time() + timeout_s
    still = {task for task in tasks if not task.done()}
    if still and told_s > 0:
        _, still = await asyncio.wait(still, timeout=min(told_s, timeout_s))
    for attempt in range(2):
        if not still:
            break
        for task in still:
            task.cancel()
        left_s = deadline_s - loop.time()
        wait_s = left_s / 2 if attempt == 0 else left_s
        _, still = await asyncio.wait(still, timeout=max(0.0, wait_s))
    for task in tasks:
        if task.done() and not task.cancelled() and task.exception() is not None:
            logger.warning("%s: %s failed: %r", what, task.get_name(), task.exception())
    for task in still:
        logger.warning(
            "%s: %s did not stop within %g s; left behind", what, task.get_name(), timeout_s
        )
    return sorted(still, key=lambda task: task.get_name())

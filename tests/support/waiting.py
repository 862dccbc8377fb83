"""Waiting in tests: on the work itself, bounded in seconds, never by counting loop turns.

Much of what a test waits for finishes off the event loop: an image is kept with
an ``fsync`` on a thread, the store writes on its own thread, Redis answers over
a socket. How many loop turns that takes depends on how busy the machine's disk
and cores are, so a test that waits for N turns fails on a loaded machine. A
test waits here instead: :func:`until` re-checks its condition each time the
work under way has finished, and gives up after a number of seconds with a
message that says what it waited for.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sized

from sakaibot.app import App

#: How long to pause before checking again when no work under way can be waited
#: on (a job between two steps on another task or thread). Real time, so threads
#: and sockets move on; short, so a test that passes stays quick.
RECHECK_S = 0.005


async def until(
    condition: Callable[[], object],
    *,
    waiting_for: str,
    settle: Callable[[], Awaitable[object]] | None = None,
    within_s: float = 10.0,
) -> None:
    """Return as soon as ``condition()`` is true; fail after ``within_s`` seconds.

    ``settle`` waits for the work under way (see :func:`app_work`); after it the
    condition is checked again. ``waiting_for`` names what the condition means,
    for the failure message.
    """
    deadline = asyncio.timeout(within_s)
    try:
        async with deadline:
            while not condition():
                if settle is not None:
                    await settle()
                    if condition():
                        return
                await asyncio.sleep(RECHECK_S)
    except TimeoutError:
        if not deadline.expired():
            raise  # from the code under test, not this wait
        raise AssertionError(
            f"waited {within_s:g} s for {waiting_for}; it did not happen"
        ) from None


def app_work(app: App) -> Callable[[], Awaitable[None]]:
    """The work under way in ``app``: deliveries (the image kept, noted and sent),
    then the status messages they changed. The bot keeps running."""

    async def settle() -> None:
        await app.pipeline.drain()
        await app.status.drain()

    return settle


async def until_idle(app: App, *, within_s: float = 10.0) -> None:
    """Wait until every job accepted so far has ended (delivered, failed or
    cancelled), without stopping the bot as ``App.drain`` does."""
    await until(
        lambda: not app.queues.live_job_count() and not app.pipeline.delivering(),
        waiting_for="every accepted job to end",
        settle=app_work(app),
        within_s=within_s,
    )


async def until_ended(app: App, outcomes: Sized, count: int, *, within_s: float = 10.0) -> None:
    """Wait until ``outcomes`` (what ``app`` reported through ``on_outcome``) holds
    exactly ``count`` outcomes: jobs that ended, delivered or not, and requests
    refused up front, which are outcomes too. More than ``count`` fails at once:
    the test expected fewer."""
    try:
        await until(
            lambda: len(outcomes) >= count,
            waiting_for=f"{count} outcome(s)",
            settle=app_work(app),
            within_s=within_s,
        )
    except AssertionError as exc:
        raise AssertionError(f"{exc} (there were {len(outcomes)})") from None
    if len(outcomes) != count:
        raise AssertionError(f"expected {count} outcome(s), there were {len(outcomes)}")

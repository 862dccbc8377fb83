"""Bounded stops: tasks that lose their cancel are left behind, never waited for."""

from __future__ import annotations

import asyncio
import logging

import pytest

from sakaibot.stopping import stop_tasks, wait_event


async def loses_cancels(times: int, release: asyncio.Event) -> None:
    """Runs until ``release``, ignoring its first ``times`` cancels (a lost cancel)."""
    lost = 0
    while not release.is_set():
        try:
            await release.wait()
        except asyncio.CancelledError:
            lost += 1
            if lost > times:
                raise


async def test_a_task_that_loses_its_first_cancel_is_stopped_by_the_second() -> None:
    release = asyncio.Event()
    task = asyncio.create_task(loses_cancels(1, release), name="one-lost")
    await asyncio.sleep(0)  # let it start waiting
    left = await stop_tasks([task], timeout_s=1, what="test")
    assert left == []
    assert task.cancelled()


async def test_a_task_that_ignores_every_cancel_is_left_behind_and_named(
    caplog: pytest.LogCaptureFixture,
) -> None:
    release = asyncio.Event()
    task = asyncio.create_task(loses_cancels(1000, release), name="deaf-task")
    await asyncio.sleep(0)
    with caplog.at_level(logging.WARNING, logger="sakaibot.stopping"):
        async with asyncio.timeout(5):  # the stop itself is bounded, whatever the task does
            left = await stop_tasks([task], timeout_s=0.2, what="test stop")
    assert left == [task]
    assert "test stop: deaf-task did not stop within 0.2 s; left behind" in caplog.text
    release.set()
    await task


async def test_tasks_told_to_stop_end_by_themselves_without_a_cancel() -> None:
    told = asyncio.Event()

    async def watches() -> str:
        await told.wait()
        return "ended by itself"

    task = asyncio.create_task(watches())
    await asyncio.sleep(0)
    told.set()
    assert await stop_tasks([task], timeout_s=5, told_s=5, what="test") == []
    assert task.result() == "ended by itself"


async def test_a_task_that_failed_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    async def fails() -> None:
        raise RuntimeError("boom")

    task = asyncio.create_task(fails(), name="failing")
    await asyncio.wait({task})
    with caplog.at_level(logging.WARNING, logger="sakaibot.stopping"):
        assert await stop_tasks([task], timeout_s=1, what="test") == []
    assert "failing failed: RuntimeError('boom')" in caplog.text


async def test_wait_event_says_whether_the_event_came() -> None:
    event = asyncio.Event()
    assert await wait_event(event, 0.01) is False
    event.set()
    assert await wait_event(event, 5) is True


async def test_a_cancel_that_lands_as_the_event_comes_still_reaches_the_caller() -> None:
    # asyncio.wait_for on Python 3.11 returns the event here and drops the cancel.
    event = asyncio.Event()
    waiter = asyncio.create_task(wait_event(event, 10))
    await asyncio.sleep(0)  # waiting now
    event.set()
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter

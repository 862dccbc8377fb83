"""Daily budgets shared by front ends, against a real redis-server."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from uuid import uuid4

import pytest

from sakaibot.quota import next_reset_s
from sakaibot.shared.backend import RedisBackend
from sakaibot.shared.budgets import SharedBudgets
from sakaibot.shared.outage import OutageLog
from tests.support.fakes import FakeClock
from tests.support.redis_server import RedisServer

MODELS = ["flux", "sdxl"]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with RedisServer(tmp_path_factory.mktemp("redis")) as running:
        yield running


@pytest.fixture
async def backends(server: RedisServer) -> AsyncIterator[tuple[RedisBackend, RedisBackend]]:
    """Two front ends' connections to the same bot."""
    prefix = f"t-{uuid4().hex[:8]}"
    first = RedisBackend(server.url, prefix=prefix)
    second = RedisBackend(server.url, prefix=prefix)
    await first.open()
    await second.open()
    yield first, second
    await first.close()
    await second.close()


def budgets(backend: RedisBackend, wall: FakeClock | None = None, **limits: int) -> SharedBudgets:
    return SharedBudgets(backend, limits, MODELS, wall or time.time, outage=OutageLog())


async def test_two_front_ends_spend_one_budget(
    backends: tuple[RedisBackend, RedisBackend],
) -> None:
    first, second = budgets(backends[0], flux=3), budgets(backends[1], flux=3)
    assert await first.take("flux")
    assert await second.take("flux")
    assert await first.take("flux")
    assert first.paused_until_s("flux") is not None  # the view came back with the take
    assert second.paused_until_s("flux") is None  # not refreshed yet
    assert not await second.take("flux")
    assert second.used("flux") == 3
    # The refusal names the next 00:00 UTC (by the Redis clock).
    until_s = second.paused_until_s("flux")
    assert until_s is not None
    assert until_s % 86_400 == 0
    assert 0 < until_s - time.time() <= 86_400
    await first.give_back("flux")
    await second.refresh()
    assert second.paused_until_s("flux") is None
    assert [u.used for u in second.uses(MODELS)] == [2, 0]


async def test_the_quota_error_heard_by_one_pauses_the_model_for_the_other(
    backends: tuple[RedisBackend, RedisBackend],
) -> None:
    first, second = budgets(backends[0]), budgets(backends[1])
    await first.quota_exhausted("sdxl")
    await second.refresh()
    assert second.paused_until_s("sdxl") is not None
    assert second.paused_until_s("flux") is None
    assert not await second.take("sdxl")


async def test_a_restart_keeps_redis_counts_and_restores_what_redis_lost(
    backends: tuple[RedisBackend, RedisBackend],
) -> None:
    first, restarted = budgets(backends[0], flux=5), budgets(backends[1], flux=5)
    for _ in range(3):
        assert await first.take("flux")
    # This front end's store knows of 1 image: Redis has more, and keeps them.
    await restarted.restore({"flux": 1}, [])
    assert restarted.used("flux") == 3
    # A store that knows more than Redis (Redis came back empty) raises the count.
    await restarted.restore({"flux": 4}, ["sdxl"])
    assert restarted.used("flux") == 4
    assert restarted.paused_until_s("sdxl") is not None


async def test_a_view_from_a_day_that_is_over_is_not_answered_from(
    backends: tuple[RedisBackend, RedisBackend],
) -> None:
    wall = FakeClock(time.time())
    shared = budgets(backends[0], wall, flux=1)
    assert await shared.take("flux")
    until_s = shared.paused_until_s("flux")
    assert until_s is not None
    wall.advance(until_s - wall())  # 00:00 UTC by this front end's clock
    assert shared.paused_until_s("flux") is None
    assert shared.used("flux") == 0


async def test_an_unreachable_redis_lets_images_through_and_keeps_a_quota_error_here() -> None:
    never_opened = RedisBackend("redis://127.0.0.1:9/0")
    shared = budgets(never_opened, flux=1)
    assert await shared.take("flux")  # the hand-over waits for Redis anyway
    await shared.give_back("flux")
    await shared.refresh()
    assert shared.paused_until_s("flux") is None
    await shared.quota_exhausted("flux")
    assert shared.paused_until_s("flux") == next_reset_s(time.time())
    assert not await shared.take("flux")

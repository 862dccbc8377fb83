"""The Redis adapter against a real redis-server: queues, fencing, windows, the cache cap."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, date, datetime, timedelta
from uuid import uuid4

import pytest
from redis.asyncio import Redis

from sakaibot.errors import QueueFull, StoreUnavailable, TooManyPending
from sakaibot.limits import Denial, RateWindow
from sakaibot.shared.backend import (
    _DAY_HELPERS,
    BUDGET_KEPT_PAST_DAY_S,
    WORKERS_GROUP,
    RedisBackend,
)
from sakaibot.shared.interfaces import Taken
from tests.support.redis_server import RedisServer
from tests.support.waiting import RECHECK_S


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with RedisServer(tmp_path_factory.mktemp("redis")) as running:
        yield running


@pytest.fixture
async def prefix() -> str:
    return f"t-{uuid4().hex[:8]}"


@pytest.fixture
async def backend(server: RedisServer, prefix: str) -> AsyncIterator[RedisBackend]:
    opened = RedisBackend(server.url, prefix=prefix)
    await opened.open()
    yield opened
    await opened.close()


async def other(server: RedisServer, prefix: str, **options: int) -> RedisBackend:
    """Another process's connection to the same bot."""
    opened = RedisBackend(server.url, prefix=prefix, **options)  # type: ignore[arg-type]
    await opened.open()
    return opened


async def fall_silent(
    server: RedisServer, backend: RedisBackend, taken: Taken, worker: str
) -> None:
    """Make the job look idle for an hour, as if its worker had died long ago.

    ``XCLAIM ... IDLE`` sets the idle time Redis keeps for the entry (same holder,
    same delivery count), so no test waits for the Redis clock to move.
    """
    raw = Redis.from_url(server.url)
    try:
        stream = backend.keys.queue("flux")
        await raw.xclaim(
            stream, WORKERS_GROUP, worker, 0, [taken.entry_id], idle=3_600_000, justid=True
        )
    finally:
        await raw.aclose()


async def add(
    backend: RedisBackend,
    job_id: str,
    *,
    user: str = "ann",
    frontend: str = "fe-a",
    max_waiting: int = 10,
    max_pending: int = 10,
) -> int:
    payload = json.dumps({"job": job_id, "frontend": frontend})
    return await backend.enqueue(
        "flux",
        job_id,
        payload,
        user_id=user,
        frontend_id=frontend,
        max_waiting=max_waiting,
        max_pending=max_pending,
        model_label="Flux",
    )


async def test_jobs_are_taken_in_order_and_positions_move(backend: RedisBackend) -> None:
    assert [await add(backend, f"j{n}", user=f"u{n}") for n in range(3)] == [1, 2, 3]
    taken = await backend.take("flux", "w1", lease_s=60, block_s=0.01)
    assert taken is not None
    assert (taken.job_id, taken.deliveries) == ("j0", 1)
    assert [await backend.position("flux", f"j{n}") for n in range(3)] == [0, 1, 2]
    assert await backend.position("flux", "never-added") is None


async def test_the_bounds_are_shared_by_every_front_end(
    server: RedisServer, prefix: str, backend: RedisBackend
) -> None:
    second = await other(server, prefix)
    try:
        await add(backend, "a1", user="ann", frontend="fe-a", max_waiting=3)
        await add(second, "b1", user="bob", frontend="fe-b", max_waiting=3)
        await add(second, "b2", user="ann", frontend="fe-b", max_waiting=3)
        with pytest.raises(QueueFull) as full:
            await add(backend, "a2", user="cat", frontend="fe-a", max_waiting=3)
        assert "(3 waiting)" in full.value.user_message
        # Ann has one job through each front end: her bound of 2 counts both.
        with pytest.raises(TooManyPending) as too_many:
            await add(second, "b3", user="ann", frontend="fe-b", max_waiting=9, max_pending=2)
        assert too_many.value.pending == 2
        # A job taken by a worker no longer waits, but still counts for its user.
        assert await backend.take("flux", "w1", lease_s=60, block_s=0.01) is not None
        assert await add(backend, "a3", user="cat", frontend="fe-a", max_waiting=3) == 3
        with pytest.raises(TooManyPending):
            await add(second, "b4", user="ann", frontend="fe-b", max_waiting=9, max_pending=2)
    finally:
        await second.close()


async def test_the_same_job_again_is_not_queued_twice(backend: RedisBackend) -> None:
    assert await add(backend, "j1") == 1
    assert await add(backend, "j1") == 1
    assert await add(backend, "j2", max_pending=2) == 2


async def test_only_a_job_no_worker_has_taken_can_be_cancelled(backend: RedisBackend) -> None:
    await add(backend, "j1")
    await add(backend, "j2")
    assert not await backend.cancel("flux", "j2", "fe-other")  # not this front end's
    assert await backend.take("flux", "w1", lease_s=60, block_s=0.01) is not None
    assert not await backend.cancel("flux", "j1", "fe-a")  # a worker has it
    assert await backend.cancel("flux", "j2", "fe-a")
    assert await backend.position("flux", "j2") is None
    assert await backend.take("flux", "w2", lease_s=60, block_s=0.01) is None
    # The cancelled job no longer counts for its user.
    assert await add(backend, "j3", max_pending=2) == 1


async def test_a_silent_workers_job_is_taken_over_before_new_ones(
    server: RedisServer, backend: RedisBackend
) -> None:
    await add(backend, "j1")
    await add(backend, "j2")
    first = await backend.take("flux", "w1", lease_s=60, block_s=0.01)
    assert first is not None
    await fall_silent(server, backend, first, "w1")
    again = await backend.take("flux", "w2", lease_s=60, block_s=0.01)
    assert again is not None
    assert (again.job_id, again.deliveries) == ("j1", 2)


async def test_a_kept_job_is_not_taken_over(backend: RedisBackend) -> None:
    await add(backend, "j1")
    taken = await backend.take("flux", "w1", lease_s=60, block_s=0.01)
    assert taken is not None
    assert await backend.keep("flux", "w1", taken.entry_id)
    # Kept just now: idle for less than a minute, so nobody takes it.
    assert await backend.take("flux", "w2", lease_s=60, block_s=0.01) is None


async def test_only_the_current_holder_may_answer(
    server: RedisServer, backend: RedisBackend
) -> None:
    await add(backend, "j1", frontend="fe-a")
    stale = await backend.take("flux", "w1", lease_s=60, block_s=0.01)
    assert stale is not None
    await fall_silent(server, backend, stale, "w1")
    current = await backend.take("flux", "w2", lease_s=60, block_s=0.01)
    assert current is not None
    ok = json.dumps({"ok": True})
    assert await backend.answer("flux", "w2", current, "fe-a", ok, b"image")
    # The first worker wakes up late: its failure neither replaces nor adds an answer.
    failed = json.dumps({"ok": False, "error_kind": "worker_error"})
    assert not await backend.answer("flux", "w1", stale, "fe-a", failed, None)
    assert not await backend.keep("flux", "w1", stale.entry_id)
    await backend.open_answers("fe-a")
    answers = await backend.next_answers("fe-a", block_s=0.01)
    assert [(a.job_id, a.image) for a in answers] == [("j1", b"image")]


async def test_an_answer_stays_known_until_acknowledged_and_is_read_again_after_a_crash(
    backend: RedisBackend,
) -> None:
    await backend.open_answers("fe-a")
    await add(backend, "j1")
    taken = await backend.take("flux", "w1", lease_s=60, block_s=0.01)
    assert taken is not None
    assert await backend.answer("flux", "w1", taken, "fe-a", "{}", None)
    [read] = await backend.next_answers("fe-a", block_s=0.01)
    # Answered, not yet acknowledged: the job is known (taken), never lost.
    assert await backend.position("flux", "j1") == 0
    assert await backend.next_answers("fe-a", block_s=0.01) == []
    assert [a.job_id for a in await backend.unacked_answers("fe-a")] == ["j1"]
    await backend.ack_answer("fe-a", read)
    assert await backend.unacked_answers("fe-a") == []
    assert await backend.position("flux", "j1") is None


async def test_rate_windows_decide_on_the_redis_clock(backend: RedisBackend) -> None:
    windows = [RateWindow(limit=2, window_s=60.0)]
    first = await backend.admit("ann", windows)
    second = await backend.admit("ann", windows)
    assert isinstance(first, float)
    assert isinstance(second, float)
    denied = await backend.admit("ann", windows)
    assert isinstance(denied, Denial)
    assert 59.0 < denied.retry_after_s <= 60.0
    assert await backend.refund("ann", second)
    assert not await backend.refund("ann", second)
    assert isinstance(await backend.admit("ann", windows), float)


async def test_the_cache_stays_under_its_cap_evicting_the_least_recently_used(
    server: RedisServer, prefix: str
) -> None:
    capped = await other(server, prefix, cache_max_bytes=3000)
    try:
        for key in ("a", "b", "c"):
            assert await capped.cache_put(key, "{}", b"x" * 900, ttl_s=60)
        assert await capped.cache_get("a") is not None  # "a" is used again: "b" is oldest
        assert await capped.cache_put("d", "{}", b"x" * 900, ttl_s=60)
        assert await capped.cache_get("b") is None
        assert [await capped.cache_get(k) is not None for k in "acd"] == [True, True, True]
        entries, size_bytes = await capped.cache_usage()
        assert entries == 3
        assert size_bytes <= 3000
        # One image larger than the whole cache is not kept, and evicts nothing.
        assert not await capped.cache_put("huge", "{}", b"x" * 4000, ttl_s=60)
        assert await capped.cache_count() == 3
        assert await capped.cache_clear() == 3
        assert await capped.cache_usage() == (0, 0)
    finally:
        await capped.close()


async def test_a_cache_entry_leaves_when_it_expires(backend: RedisBackend) -> None:
    await backend.cache_put("k", "{}", b"img", ttl_s=0.001)
    async with asyncio.timeout(5):  # the Redis clock passes its millisecond
        while True:
            if await backend.cache_count() == 0:
                break
            await asyncio.sleep(RECHECK_S)
    assert await backend.cache_get("k") is None
    assert await backend.cache_usage() == (0, 0)


async def test_an_unreachable_redis_is_store_unavailable() -> None:
    closed = RedisBackend("redis://127.0.0.1:9/0", connect_timeout_s=2)
    with pytest.raises(StoreUnavailable) as failure:
        await closed.open()
    assert "127.0.0.1:9" in str(failure.value)


def test_a_url_that_is_not_redis_is_refused() -> None:
    with pytest.raises(ValueError, match="redis://"):
        RedisBackend("http://localhost:6379")


async def test_several_requests_are_counted_together_or_refused_whole(
    backend: RedisBackend,
) -> None:
    windows = [RateWindow(limit=3, window_s=60.0)]
    never = await backend.admit("bob", windows, 4)
    assert isinstance(never, Denial)
    assert never.retry_after_s == 60.0
    stamp = await backend.admit("bob", windows, 2)
    assert isinstance(stamp, float)
    over = await backend.admit("bob", windows, 2)
    assert isinstance(over, Denial)
    assert 59.0 < over.retry_after_s <= 60.0
    # Each refund gives one of the two back.
    assert await backend.refund("bob", stamp)
    assert isinstance(await backend.admit("bob", windows, 2), float)
    assert isinstance(await backend.admit("bob", windows), Denial)


# -- daily budgets ----------------------------------------------------------------------


async def redis_today(server: RedisServer) -> tuple[date, int, int]:
    """The Redis clock's UTC day, its end (Unix seconds) and the seconds left to it."""
    raw = Redis.from_url(server.url)
    try:
        seconds, _ = await raw.time()
    finally:
        await raw.aclose()
    today = datetime.fromtimestamp(seconds, UTC).date()
    end_s = int(datetime.combine(today + timedelta(days=1), datetime.min.time(), UTC).timestamp())
    return today, end_s, end_s - seconds


@pytest.mark.parametrize(
    "day",
    [
        date(1970, 1, 1),
        date(1999, 12, 31),
        date(2000, 2, 29),
        date(2024, 3, 1),
        date(2025, 12, 31),
        date(2100, 3, 1),
    ],
)
async def test_the_budget_scripts_name_the_utc_day_as_the_calendar_does(
    server: RedisServer, day: date
) -> None:
    # The scripts' own date helper, on an injected day number: TIME cannot be
    # set, so this is where leap years and month ends are checked.
    raw = Redis.from_url(server.url)
    try:
        script = raw.register_script(_DAY_HELPERS + "return day_stamp(tonumber(ARGV[1]))")
        day_number = (day - date(1970, 1, 1)).days
        assert await script(keys=[], args=[day_number]) == f"{day:%Y%m%d}".encode()
    finally:
        await raw.aclose()


async def test_a_budget_is_counted_for_every_front_end_and_refused_past_its_limit(
    server: RedisServer, prefix: str, backend: RedisBackend
) -> None:
    second = await other(server, prefix)
    try:
        assert (await backend.budget_take(["flux", "sdxl"], 3)).done
        assert (await second.budget_take(["flux"], 3)).done
        third = await backend.budget_take(["flux", "sdxl"], 3)
        assert third.done
        assert third.counts == {"flux": (3, False), "sdxl": (0, False)}
        refused = await second.budget_take(["flux"], 3)
        assert not refused.done
        assert refused.counts["flux"] == (3, False)
        # One image made none: it is given back, for both front ends.
        assert (await backend.budget_give_back(["flux"])).counts["flux"] == (2, False)
        assert (await second.budget_take(["flux"], 3)).done
        # A model without a budget is counted, never refused by a count.
        for _ in range(5):
            assert (await second.budget_take(["sdxl"], None)).done
        assert (await backend.budget_read(["flux", "sdxl"])).counts == {
            "flux": (3, False),
            "sdxl": (5, False),
        }
    finally:
        await second.close()


async def test_the_quota_error_refuses_every_take_until_the_day_ends(
    server: RedisServer, backend: RedisBackend
) -> None:
    _, end_s, _ = await redis_today(server)
    hit = await backend.budget_quota_hit(["sdxl"])
    assert hit.counts == {"sdxl": (0, True)}
    assert hit.reset_at_s == end_s  # the next 00:00 UTC by the Redis clock
    assert not (await backend.budget_take(["sdxl"], None)).done
    assert not (await backend.budget_take(["sdxl"], 100)).done


async def test_budget_keys_are_per_model_per_day_and_expire_after_it(
    server: RedisServer, backend: RedisBackend
) -> None:
    await backend.budget_take(["flux"], 2)
    await backend.budget_quota_hit(["flux"])
    today, _, left_s = await redis_today(server)
    raw = Redis.from_url(server.url)
    try:
        for key in (backend.keys.budget("flux", today), backend.keys.budget_quota("flux", today)):
            ttl_s = await raw.ttl(key)
            assert left_s + BUDGET_KEPT_PAST_DAY_S - 5 <= ttl_s <= left_s + BUDGET_KEPT_PAST_DAY_S
        assert await raw.get(backend.keys.budget("flux", today)) == b"1"
    finally:
        await raw.aclose()
    assert backend.keys.budget("flux", date(2025, 1, 2)).endswith(":budget:flux:20250102")


async def test_a_count_is_never_given_back_below_nothing(backend: RedisBackend) -> None:
    assert (await backend.budget_give_back(["flux"])).counts["flux"] == (0, False)
    assert (await backend.budget_take(["flux"], 1)).done


async def test_a_restored_count_only_ever_raises_the_shared_one(backend: RedisBackend) -> None:
    await backend.budget_take(["flux"], None)
    await backend.budget_take(["flux"], None)
    assert (await backend.budget_restore(["flux"], 1)).counts["flux"] == (2, False)
    assert (await backend.budget_restore(["flux"], 4)).counts["flux"] == (4, False)

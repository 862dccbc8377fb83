"""The Redis adapter against a real ``redis-server`` (skipped, saying how to install it, if absent).

One server serves the module; every test gets its own key prefix, so tests
never see each other's keys. Time is always passed in: nothing here sleeps to
let time pass, and lease expiry is a matter of the ``now_s`` given to reap().
"""

from __future__ import annotations

import asyncio
import math
import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from uuid import uuid4

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.asyncio import Redis
from redis.exceptions import RedisError

from sakaibot.errors import QueueFull, StoreUnavailable, TooManyPending
from sakaibot.limits import Denial, RateWindow, SlidingWindowLimiter
from sakaibot.redis_backend import RedisBackend
from tests.support.redis_server import RedisServer
from tests.support.waiting import until

MINUTE = RateWindow(limit=2, window_s=60.0)
HOUR = RateWindow(limit=3, window_s=3600.0)


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with RedisServer(tmp_path_factory.mktemp("redis")) as server:
        yield server


def _prefix() -> str:
    return f"test-{uuid4().hex[:12]}"


@pytest.fixture
async def backend(redis_server: RedisServer) -> AsyncIterator[RedisBackend]:
    store = RedisBackend(redis_server.url, prefix=_prefix())
    await store.open()
    yield store
    await store.close()


@pytest.fixture
async def raw(redis_server: RedisServer) -> AsyncIterator[Redis]:
    """A plain client, to look at what the backend left in Redis."""
    client = Redis.from_url(redis_server.url)
    yield client
    await client.aclose()


async def _enqueue(
    store: RedisBackend,
    model: str,
    job_id: str,
    *,
    user: str = "u1",
    max_waiting: int = 100,
    max_pending: int = 100,
) -> int:
    return await store.enqueue(
        model,
        job_id,
        f"payload-{job_id}",
        user_id=user,
        max_waiting=max_waiting,
        max_pending=max_pending,
    )


# -- rate windows -----------------------------------------------------------------


async def test_admit_records_until_a_window_is_full_and_says_when_it_frees(
    backend: RedisBackend,
) -> None:
    windows = [HOUR, MINUTE]  # any order: the shortest window is checked first, as locally
    assert await backend.admit("u1", windows, 1000.0) == 1000.0
    assert await backend.admit("u1", windows, 1010.0) == 1010.0
    # The minute is full: the slot taken at 1000 frees at 1060.
    assert await backend.admit("u1", windows, 1030.0) == Denial(30.0, MINUTE)
    assert await backend.admit("u2", windows, 1030.0) == 1030.0  # other users are apart
    assert await backend.admit("u1", windows, 1061.0) == 1061.0
    # Now the hour is full too, and it frees last: that is the one reported.
    assert await backend.admit("u1", windows, 1062.0) == Denial(3538.0, HOUR)


async def test_refund_gives_the_slot_back_once(backend: RedisBackend) -> None:
    windows = [MINUTE]
    first = await backend.admit("u1", windows, 1000.0)
    second = await backend.admit("u1", windows, 1000.0)  # the same instant: still two requests
    assert first == second == 1000.0
    assert isinstance(await backend.admit("u1", windows, 1001.0), Denial)

    assert await backend.refund("u1", 1000.0) is True
    assert await backend.admit("u1", windows, 1002.0) == 1002.0
    assert await backend.refund("u1", 1002.0) is True
    assert await backend.refund("u1", 1002.0) is False
    assert await backend.refund("nobody", 1000.0) is False


async def test_rate_key_expires_after_the_longest_window(backend: RedisBackend, raw: Redis) -> None:
    await backend.admit("u1", [MINUTE, HOUR], 1000.0)
    ttl_ms = await raw.pttl(backend.keys.rate("u1"))
    assert 3_590_000 < ttl_ms <= 3_600_000


async def test_no_windows_admits_everything_and_stores_nothing(
    backend: RedisBackend, raw: Redis
) -> None:
    for _ in range(5):
        assert await backend.admit("u1", [], 1000.5) == 1000.5
    assert await raw.exists(backend.keys.rate("u1")) == 0
    # Nothing to check, so not even a connection is needed.
    assert await RedisBackend("redis://127.0.0.1:1/0").admit("u1", [], 7.0) == 7.0


async def test_concurrent_admits_never_share_the_last_slot(redis_server: RedisServer) -> None:
    prefix = _prefix()
    stores = [RedisBackend(redis_server.url, prefix=prefix) for _ in range(3)]
    for store in stores:
        await store.open()
    try:
        window = RateWindow(limit=3, window_s=60.0)
        answers = await asyncio.gather(
            *(stores[i % 3].admit("u1", [window], 1000.0 + i / 100) for i in range(15))
        )
    finally:
        for store in stores:
            await store.close()
    assert sum(1 for answer in answers if isinstance(answer, float)) == 3


_WINDOWS = st.lists(
    st.builds(
        RateWindow,
        limit=st.integers(min_value=1, max_value=4),
        # At least 5 s: the keys' real-time TTL can never run out within an example.
        window_s=st.sampled_from([5.0, 7.5, 12.5, 30.0]),
    ),
    min_size=1,
    max_size=3,
)
_STEPS = st.lists(
    st.tuples(
        st.sampled_from(["admit", "admit", "admit", "refund"]),
        st.sampled_from(["u1", "u2"]),
        # Tenths do not add up exactly in binary: stamps must round-trip to the last bit.
        st.integers(min_value=0, max_value=80).map(lambda tenths: tenths / 10),
        st.integers(min_value=0, max_value=20),
    ),
    min_size=1,
    max_size=30,
)


@settings(
    max_examples=30,
    deadline=None,
    # The autouse environment fixture only clears variables; sharing it is harmless.
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(windows=_WINDOWS, steps=_STEPS)
def test_admit_decides_exactly_like_the_local_limiter(
    redis_server: RedisServer,
    windows: list[RateWindow],
    steps: list[tuple[str, str, float, int]],
) -> None:
    async def scenario() -> None:
        now = [1_000_000.3]
        limiter = SlidingWindowLimiter(windows, lambda: now[0])
        accepted: dict[str, list[float]] = {"u1": [], "u2": []}
        store = RedisBackend(redis_server.url, prefix=_prefix())
        await store.open()
        try:
            for action, user, gap_s, pick in steps:
                now[0] += gap_s
                if action == "admit":
                    expected = limiter.check(user) or limiter.record(user)
                    got = await store.admit(user, windows, now[0])
                    assert got == expected
                    if isinstance(got, float):
                        accepted[user].append(got)
                elif accepted[user]:
                    stamp = accepted[user][pick % len(accepted[user])]
                    assert await store.refund(user, stamp) == limiter.refund(user, stamp)
        finally:
            await store.close()

    asyncio.run(scenario())


# -- queues -----------------------------------------------------------------------


async def test_enqueue_is_fifo_with_positions(backend: RedisBackend) -> None:
    assert [await _enqueue(backend, "flux", f"j{i}") for i in range(4)] == [1, 2, 3, 4]
    assert await _enqueue(backend, "sdxl", "s1") == 1  # each model has its own queue
    assert await backend.waiting_ids("flux", 10) == ["j0", "j1", "j2", "j3"]
    assert await backend.waiting_ids("flux", 2) == ["j0", "j1"]
    assert await backend.waiting_ids("flux", 0) == []
    assert await backend.position("flux", "j2") == 3
    assert await backend.position("flux", "s1") is None
    assert await backend.position("flux", "nope") is None
    assert await backend.waiting_count("flux") == 4
    assert await backend.running_count("flux") == 0


async def test_enqueue_again_after_a_lost_reply_counts_once(backend: RedisBackend) -> None:
    await _enqueue(backend, "flux", "j0")
    assert await _enqueue(backend, "flux", "j1", max_pending=2) == 2
    # The same call again (a retry): same position, and the user still has 2 pending.
    assert await _enqueue(backend, "flux", "j1", max_pending=2) == 2
    assert await backend.waiting_count("flux") == 2
    with pytest.raises(ValueError, match="already queued or running"):
        await _enqueue(backend, "sdxl", "j1")  # the same id for something else
    with pytest.raises(ValueError, match="newline"):
        await _enqueue(backend, "flux", "bad\nid")


async def test_a_full_queue_is_refused_with_the_user_message(backend: RedisBackend) -> None:
    await _enqueue(backend, "flux", "a", user="u1", max_waiting=2)
    await _enqueue(backend, "flux", "b", user="u2", max_waiting=2)
    with pytest.raises(QueueFull) as caught:
        await backend.enqueue(
            "flux",
            "c",
            "{}",
            user_id="u3",
            max_waiting=2,
            max_pending=5,
            model_label="FLUX.1",
        )
    assert caught.value.user_message == (
        "The FLUX.1 queue is full (2 waiting). "
        "Try again in a few minutes, or use another model (/image models)."
    )
    with pytest.raises(QueueFull, match="flux queue full at 2"):
        await _enqueue(backend, "flux", "c", user="u3", max_waiting=2)
    assert await backend.waiting_count("flux") == 2
    # A job taken by a worker no longer waits: there is room again.
    assert await backend.claim("flux", "w1", 30.0, 0.0) is not None
    assert await _enqueue(backend, "flux", "c", user="u3", max_waiting=2) == 2


async def test_pending_jobs_count_across_models_until_completed(backend: RedisBackend) -> None:
    await _enqueue(backend, "flux", "a", max_pending=2)
    await _enqueue(backend, "sdxl", "b", max_pending=2)
    with pytest.raises(TooManyPending) as caught:
        await _enqueue(backend, "dalle", "c", max_pending=2)
    assert caught.value.user_message == (
        "You already have 2 images waiting or generating (the limit is 2). "
        "Wait for one to finish, or cancel a waiting one with /image cancel."
    )
    assert await _enqueue(backend, "dalle", "c", user="u2", max_pending=2) == 1  # others may

    # Running still counts; finishing does not.
    job = await backend.claim("flux", "w1", 30.0, 0.0)
    assert job == ("a", "payload-a")
    with pytest.raises(TooManyPending):
        await _enqueue(backend, "dalle", "c2", max_pending=2)
    assert await backend.complete("flux", "a", "w1", "u1") is True
    assert await _enqueue(backend, "dalle", "c2", max_pending=2) == 2


async def test_cancel_moves_the_others_up(backend: RedisBackend, raw: Redis) -> None:
    for job_id in ("a", "b", "c"):
        await _enqueue(backend, "flux", job_id, max_pending=3)
    assert await backend.cancel("flux", "b", "u2") is False  # not theirs
    assert await backend.cancel("flux", "b", "u1") is True
    assert await backend.cancel("flux", "b", "u1") is False  # once
    assert await backend.position("flux", "c") == 2
    assert await backend.waiting_ids("flux", 10) == ["a", "c"]
    assert await raw.exists(backend.keys.job("b")) == 0
    assert await _enqueue(backend, "flux", "d", max_pending=3) == 3  # the slot is free again

    # A running job is the worker's: it cannot be cancelled.
    assert await backend.claim("flux", "w1", 30.0, 0.0) == ("a", "payload-a")
    assert await backend.cancel("flux", "a", "u1") is False
    assert await backend.cancel("flux", "nope", "u1") is False
    for job_id in ("c", "d"):
        assert await backend.cancel("flux", job_id, "u1") is True
    assert await backend.complete("flux", "a", "w1", "u1") is True
    # Every counter is gone with the last job.
    assert await raw.exists(backend.keys.pending("u1")) == 0


# -- leases -------------------------------------------------------------------------


async def test_claim_takes_jobs_in_order(backend: RedisBackend, raw: Redis) -> None:
    assert await backend.claim("flux", "w1", 30.0, 100.0) is None
    for job_id in ("a", "b"):
        await _enqueue(backend, "flux", job_id)
    assert await backend.claim("flux", "w1", 30.0, 100.0) == ("a", "payload-a")
    assert await backend.position("flux", "b") == 1
    assert await backend.claim("flux", "w2", 30.0, 100.0) == ("b", "payload-b")
    assert await backend.claim("flux", "w3", 30.0, 100.0) is None
    assert await backend.waiting_count("flux") == 0
    assert await backend.running_count("flux") == 2
    assert await raw.zscore(backend.keys.leases("flux"), "a") == 130.0


async def test_only_the_holder_completes(backend: RedisBackend, raw: Redis) -> None:
    await _enqueue(backend, "flux", "a")
    await backend.claim("flux", "w1", 30.0, 0.0)
    assert await backend.complete("flux", "a", "impostor", "u1") is False
    assert await backend.renew("flux", "a", "impostor", 30.0, 10.0) is False
    assert await backend.running_count("flux") == 1
    with pytest.raises(ValueError, match="does not belong"):
        await backend.complete("flux", "a", "w1", "u2")
    assert await backend.complete("flux", "a", "w1", "u1") is True
    assert await backend.complete("flux", "a", "w1", "u1") is False
    assert await backend.running_count("flux") == 0
    assert await raw.exists(backend.keys.job("a"), backend.keys.pending("u1")) == 0


async def test_an_expired_lease_goes_back_first_and_the_job_finishes_once(
    backend: RedisBackend,
) -> None:
    for job_id in ("a", "b", "c"):
        await _enqueue(backend, "flux", job_id)
    assert await backend.claim("flux", "w1", 30.0, 0.0) == ("a", "payload-a")

    assert await backend.reap("flux", 29.9) == []
    assert await backend.renew("flux", "a", "w1", 30.0, 20.0) is True  # now until 50
    assert await backend.reap("flux", 49.0) == []
    # w1 went silent: at its deadline the job goes back, ahead of the later ones.
    assert await backend.reap("flux", 50.0) == ["a"]
    assert await backend.waiting_ids("flux", 10) == ["a", "b", "c"]
    assert await backend.position("flux", "a") == 1
    assert await backend.running_count("flux") == 0

    assert await backend.claim("flux", "w2", 30.0, 51.0) == ("a", "payload-a")
    # w1 wakes up: it no longer holds the job, so it can neither renew nor finish it.
    assert await backend.renew("flux", "a", "w1", 30.0, 52.0) is False
    assert await backend.complete("flux", "a", "w1", "u1") is False
    assert await backend.complete("flux", "a", "w2", "u1") is True
    assert await backend.reap("flux", 1000.0) == []
    assert await backend.waiting_ids("flux", 10) == ["b", "c"]


async def test_reap_keeps_acceptance_order_across_several_expired_jobs(
    backend: RedisBackend,
) -> None:
    for job_id in ("a", "b", "c", "d"):
        await _enqueue(backend, "flux", job_id)
    await backend.claim("flux", "w1", 10.0, 0.0)  # a, until 10
    await backend.claim("flux", "w2", 5.0, 0.0)  # b, until 5
    await _enqueue(backend, "flux", "e")
    assert await backend.reap("flux", 20.0) == ["b", "a"]  # earliest deadline first
    assert await backend.waiting_ids("flux", 10) == ["a", "b", "c", "d", "e"]


async def test_concurrent_claimers_take_every_job_exactly_once(
    backend: RedisBackend, redis_server: RedisServer
) -> None:
    job_ids = [f"job-{i:02}" for i in range(50)]
    for job_id in job_ids:
        await _enqueue(backend, "flux", job_id)
    # Three backends over the same keys stand for three worker processes.
    others = [RedisBackend(redis_server.url, prefix=backend.keys.prefix) for _ in range(2)]
    for other in others:
        await other.open()
    stores = [backend, *others]

    async def claimer(number: int) -> list[str]:
        store = stores[number % len(stores)]
        taken: list[str] = []
        while (job := await store.claim("flux", f"w{number}", 60.0, 0.0)) is not None:
            job_id, payload = job
            assert payload == f"payload-{job_id}"
            taken.append(job_id)
        return taken

    try:
        taken = await asyncio.gather(*(claimer(number) for number in range(20)))
    finally:
        for other in others:
            await other.close()
    claimed = [job_id for batch in taken for job_id in batch]
    assert sorted(claimed) == job_ids
    assert await backend.running_count("flux") == 50
    assert await backend.waiting_count("flux") == 0


async def test_concurrent_enqueues_respect_the_bound(backend: RedisBackend) -> None:
    answers = await asyncio.gather(
        *(_enqueue(backend, "flux", f"j{i}", user=f"u{i}", max_waiting=10) for i in range(30)),
        return_exceptions=True,
    )
    positions = sorted(answer for answer in answers if isinstance(answer, int))
    assert positions == list(range(1, 11))
    assert all(isinstance(answer, QueueFull) for answer in answers if not isinstance(answer, int))


# -- results ---------------------------------------------------------------------------


async def test_a_result_reaches_its_front_end_and_is_acked(
    backend: RedisBackend, raw: Redis
) -> None:
    await backend.publish_result("fe1", "j1", '{"ok": true}', b"\x89PNG image", ttl_s=600.0)
    await backend.publish_result("fe1", "j2", '{"ok": false}', None, ttl_s=600.0)
    ttl_ms = await raw.pttl(backend.keys.result_image("j1"))
    assert 590_000 < ttl_ms <= 600_000

    assert await backend.next_result("fe2", timeout_s=0) is None  # another front end's
    assert await backend.next_result("fe1", timeout_s=1.0) == (
        "j1",
        '{"ok": true}',
        b"\x89PNG image",
    )
    assert await backend.unacked_results("fe1") == [("j1", '{"ok": true}', b"\x89PNG image")]
    await backend.ack_result("fe1", "j1")
    await backend.ack_result("fe1", "j1")  # twice is harmless
    assert await backend.unacked_results("fe1") == []
    assert await raw.exists(backend.keys.result_image("j1")) == 0

    assert await backend.next_result("fe1", timeout_s=0) == ("j2", '{"ok": false}', None)
    await backend.ack_result("fe1", "j2")
    assert await backend.next_result("fe1", timeout_s=0) is None
    assert await backend.unacked_results("fe1") == []


async def test_next_result_waits_for_a_result(backend: RedisBackend) -> None:
    waiting = asyncio.create_task(backend.next_result("fe1", timeout_s=10.0))
    await backend.publish_result("fe1", "j1", "{}", b"png", ttl_s=60.0)
    assert await asyncio.wait_for(waiting, timeout=10.0) == ("j1", "{}", b"png")
    # And gives up after its timeout (a short real wait: that is what is tested).
    assert await backend.next_result("fe1", timeout_s=0.05) is None


async def test_a_long_wait_for_a_result_is_cut_below_the_reply_timeout(
    redis_server: RedisServer,
) -> None:
    # A reply timeout with room for a loaded machine (0.2 s flaked): the wait is
    # cut to 1 s, not an hour, and is not mistaken for a silent Redis.
    store = RedisBackend(redis_server.url, prefix=_prefix(), reply_timeout_s=2.0)
    await store.open()
    try:
        assert await asyncio.wait_for(store.next_result("fe1", timeout_s=3600.0), 10.0) is None
    finally:
        await store.close()


async def test_a_result_taken_but_not_acked_survives_a_crash(
    backend: RedisBackend, redis_server: RedisServer
) -> None:
    await backend.publish_result("fe1", "j1", '{"n": 1}', b"one", ttl_s=60.0)
    await backend.publish_result("fe1", "j2", '{"n": 2}', None, ttl_s=60.0)
    await backend.publish_result("fe1", "j3", '{"n": 3}\nwith a newline', b"three", ttl_s=60.0)
    for job_id in ("j1", "j2"):
        taken = await backend.next_result("fe1", timeout_s=0)
        assert taken is not None
        assert taken[0] == job_id
    await backend.close()  # the front end "crashes" before acknowledging

    restarted = RedisBackend(redis_server.url, prefix=backend.keys.prefix)
    await restarted.open()
    try:
        assert await restarted.unacked_results("fe1") == [
            ("j1", '{"n": 1}', b"one"),
            ("j2", '{"n": 2}', None),
        ]
        for job_id in ("j1", "j2"):
            await restarted.ack_result("fe1", job_id)
        assert await restarted.unacked_results("fe1") == []
        assert await restarted.next_result("fe1", timeout_s=0) == (
            "j3",
            '{"n": 3}\nwith a newline',
            b"three",
        )
    finally:
        await restarted.close()


async def test_delivery_is_recorded_once(backend: RedisBackend, raw: Redis) -> None:
    assert await backend.delivered_message("j1") is None
    assert await backend.mark_delivered("j1", 4242) is True
    assert await backend.mark_delivered("j1", 9999) is False
    assert await backend.delivered_message("j1") == 4242
    assert await raw.pttl(backend.keys.delivered("j1")) > 6 * 86400 * 1000


# -- cache -------------------------------------------------------------------------------


async def test_cache_put_get_count_clear(backend: RedisBackend, raw: Redis) -> None:
    assert await backend.cache_get("k1") is None
    assert await backend.cache_count() == 0
    await backend.cache_put("k1", '{"model": "flux"}', b"\x00\x01image", ttl_s=3600.0)
    await backend.cache_put("k2", '{"model": "sdxl"}', b"other", ttl_s=3600.0)
    await backend.cache_put("k1", '{"model": "flux", "v": 2}', b"newer", ttl_s=3600.0)
    assert await backend.cache_get("k1") == ('{"model": "flux", "v": 2}', b"newer")
    assert await backend.cache_count() == 2
    ttl_ms = await raw.pttl(backend.keys.cache("k2"))
    assert 3_590_000 < ttl_ms <= 3_600_000

    assert await backend.cache_clear() == 2
    assert await backend.cache_get("k1") is None
    assert await backend.cache_count() == 0
    assert await backend.cache_clear() == 0


async def test_expired_cache_entries_are_not_counted(backend: RedisBackend, raw: Redis) -> None:
    await backend.cache_put("gone", "{}", b"x", ttl_s=60.0)
    await backend.cache_put("kept", "{}", b"y", ttl_s=60.0)
    # Expire one now instead of waiting: what Redis does when the TTL runs out.
    await raw.delete(backend.keys.cache("gone"))
    await raw.zadd(backend.keys.cache_index, {"gone": 0})
    assert await backend.cache_get("gone") is None
    assert await backend.cache_count() == 1
    assert await backend.cache_clear() == 1


# -- failures ------------------------------------------------------------------------------


async def test_redis_restarting_is_reported_and_survived(tmp_path: Path) -> None:
    with RedisServer(tmp_path / "redis") as server:
        store = RedisBackend(server.url, prefix=_prefix())
        await store.open()
        try:
            await _enqueue(store, "flux", "a")
            server.stop()
            where = f"Redis at 127.0.0.1:{server.port} is unreachable"
            with pytest.raises(StoreUnavailable, match=where) as caught:
                await _enqueue(store, "flux", "b")
            assert isinstance(caught.value.__cause__, RedisError)
            with pytest.raises(StoreUnavailable, match=where):
                await store.waiting_count("flux")
            with pytest.raises(StoreUnavailable, match=where):
                await store.next_result("fe1", timeout_s=0)

            server.start()
            # The same object works again; the server kept nothing (no persistence).
            assert await store.waiting_count("flux") == 0
            assert await _enqueue(store, "flux", "b") == 1
            assert await store.claim("flux", "w1", 30.0, 0.0) == ("b", "payload-b")

            # A restart between two calls: once the event loop has seen the old
            # connections close (a running bot's loop does so at once), they are
            # replaced unseen, and the scripts the new Redis does not know are
            # loaded again.
            server.restart()
            await until(
                lambda: _saw_idle_connections_close(store),
                waiting_for="the event loop to see the old connections close",
            )
            assert await store.admit("u1", [MINUTE], 1.0) == 1.0
            assert await store.claim("flux", "w1", 30.0, 0.0) is None
        finally:
            await store.close()


def _saw_idle_connections_close(store: RedisBackend) -> bool:
    """Whether the event loop has read the end of every idle connection in the pool."""
    idle = store._redis.connection_pool._get_free_connections()
    return all(
        connection._reader is None or connection._reader.at_eof()  # type: ignore[attr-defined]
        for connection in idle
    )


@contextmanager
def _port_nobody_listens_on() -> Iterator[int]:
    """A local port held bound but not listening: connecting to it is refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        yield port


async def test_unreachable_redis_is_named_without_the_password() -> None:
    with _port_nobody_listens_on() as port:
        store = RedisBackend(f"redis://admin:s3cret-pass@127.0.0.1:{port}/0", prefix=_prefix())
        with pytest.raises(StoreUnavailable) as caught:
            await store.open()
    message = str(caught.value)
    assert message.startswith(f"Redis at 127.0.0.1:{port} is unreachable: ")
    assert "s3cret" not in message
    with pytest.raises(StoreUnavailable, match="not connected"):
        await store.waiting_count("flux")


async def test_other_redis_errors_become_store_unavailable(
    backend: RedisBackend, raw: Redis
) -> None:
    await raw.set(backend.keys.waiting("flux"), "not a sorted set")
    with pytest.raises(StoreUnavailable, match="failed: ResponseError: WRONGTYPE") as caught:
        await backend.waiting_count("flux")
    assert isinstance(caught.value.__cause__, RedisError)
    with pytest.raises(StoreUnavailable, match="WRONGTYPE"):
        await _enqueue(backend, "flux", "a")


def test_bad_settings_are_refused_at_once() -> None:
    with pytest.raises(ValueError, match=r"redis://, rediss:// or unix://"):
        RedisBackend("http://localhost:6379")
    with pytest.raises(ValueError, match="prefix"):
        RedisBackend("redis://localhost", prefix="")


async def test_bad_times_are_refused(backend: RedisBackend) -> None:
    with pytest.raises(ValueError, match="now_s"):
        await backend.admit("u1", [MINUTE], math.nan)
    with pytest.raises(ValueError, match="lease_s"):
        await backend.claim("flux", "w1", 0.0, 1.0)
    with pytest.raises(ValueError, match="ttl_s"):
        await backend.cache_put("k", "{}", b"", ttl_s=-1.0)

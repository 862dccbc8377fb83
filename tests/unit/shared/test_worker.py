"""Generation workers on a real redis-server: stuck keep-alives, late answers, poison jobs."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from uuid import uuid4

import pytest
from redis.asyncio import Redis

from sakaibot.errors import JobSetAside, WorkerBadRequest
from sakaibot.generation import GenerationParams
from sakaibot.i18n import load_texts
from sakaibot.models import ModelSpec
from sakaibot.shared.backend import WORKERS_GROUP, RedisBackend
from sakaibot.shared.generator import RemoteGenerator
from sakaibot.shared.interfaces import Taken
from sakaibot.shared.worker import GenerationWorker
from tests.support.fakes import FakeGenerator, registry
from tests.support.redis_server import RedisServer
from tests.support.waiting import until


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with RedisServer(tmp_path_factory.mktemp("redis")) as running:
        yield running


@pytest.fixture
async def backend(server: RedisServer) -> AsyncIterator[RedisBackend]:
    opened = RedisBackend(server.url, prefix=f"t-{uuid4().hex[:8]}")
    await opened.open()
    yield opened
    await opened.close()


@pytest.fixture
async def front_end(backend: RedisBackend) -> AsyncIterator[RemoteGenerator]:
    remote = RemoteGenerator(
        backend, frontend_id="fe-a", max_waiting=10, max_pending=10, position_poll_s=0.05
    )
    await backend.open_answers("fe-a")
    remote.start()
    yield remote
    await remote.aclose()


def flux() -> ModelSpec:
    model = registry().get("flux")
    assert model is not None
    return model


async def fall_silent(
    server: RedisServer, backend: RedisBackend, entry_id: str, worker: str
) -> None:
    """Make the job look idle for an hour (``XCLAIM ... IDLE``), as if its worker had died."""
    raw = Redis.from_url(server.url)
    try:
        await raw.xclaim(
            backend.keys.queue("flux"), WORKERS_GROUP, worker, 0, [entry_id],
            idle=3_600_000, justid=True,
        )  # fmt: skip
    finally:
        await raw.aclose()


@dataclass
class KeepStuckInFlight:
    """The shared queue, but its keep-alive hangs in flight and swallows every cancel,
    as a cancel lost inside a Redis call does on Python 3.11."""

    backend: RedisBackend
    release: asyncio.Event = field(default_factory=asyncio.Event)
    stuck: int = 0

    async def take(
        self, model: str, worker_id: str, *, lease_s: float, block_s: float
    ) -> Taken | None:
        return await self.backend.take(model, worker_id, lease_s=lease_s, block_s=block_s)

    async def keep(self, model: str, worker_id: str, entry_id: str) -> bool:
        self.stuck += 1
        while not self.release.is_set():
            try:
                await self.release.wait()
            except asyncio.CancelledError:
                continue  # the cancel is lost
        return True

    async def answer(
        self, model: str, worker_id: str, taken: Taken, frontend_id: str, result_json: str,
        image: bytes | None,
    ) -> bool:  # fmt: skip
        return await self.backend.answer(model, worker_id, taken, frontend_id, result_json, image)


async def test_a_keep_alive_that_never_ends_neither_holds_the_answer_nor_the_stop(
    backend: RedisBackend, front_end: RemoteGenerator
) -> None:
    stuck = KeepStuckInFlight(backend)
    generator = FakeGenerator(gate=asyncio.Event())
    worker = GenerationWorker(stuck, registry(), generator, lease_s=0.3)
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run(stop))
    try:
        first = asyncio.create_task(
            front_end.generate(flux(), GenerationParams("a fox", request_id="j1"))
        )
        await until(lambda: stuck.stuck == 1, waiting_for="the keep-alive to hang")
        generator.gate.set()  # the image is made while the keep-alive hangs
        async with asyncio.timeout(10):
            assert (await first).success
            # The lane goes on to the next job.
            second = await front_end.generate(flux(), GenerationParams("a cat", request_id="j2"))
        assert second.success
        stop.set()
        async with asyncio.timeout(10):  # the stop never waits for the stuck keep-alive
            await running
    finally:
        stuck.release.set()
        stop.set()
    assert worker.done == 2


async def test_a_worker_that_answers_after_being_taken_over_is_refused(
    server: RedisServer, backend: RedisBackend, front_end: RemoteGenerator
) -> None:
    slow_generator = FakeGenerator(gate=asyncio.Event(), errors=[WorkerBadRequest("late")])
    slow = GenerationWorker(backend, registry(), slow_generator, worker_id="slow", lease_s=60)
    stop_slow, stop_healthy = asyncio.Event(), asyncio.Event()
    slow_running = asyncio.create_task(slow.run(stop_slow))
    asked = asyncio.create_task(
        front_end.generate(flux(), GenerationParams("a fox", request_id="j1"))
    )
    healthy_running: asyncio.Task[None] | None = None
    try:
        await until(lambda: slow_generator.running == 1, waiting_for="the slow worker to start")
        raw = Redis.from_url(server.url)
        try:
            [row] = await raw.xpending_range(backend.keys.queue("flux"), WORKERS_GROUP, "-", "+", 1)
        finally:
            await raw.aclose()
        await fall_silent(server, backend, row["message_id"].decode(), "slow")
        healthy = GenerationWorker(
            backend, registry(), FakeGenerator(), worker_id="healthy", lease_s=60
        )
        healthy_running = asyncio.create_task(healthy.run(stop_healthy))
        async with asyncio.timeout(10):
            result = await asked
        assert result.success
        stop_slow.set()
        slow_generator.gate.set()  # the slow worker's late failure now comes
        async with asyncio.timeout(10):
            await slow_running
    finally:
        stop_slow.set()
        stop_healthy.set()
        slow_generator.gate.set()
        if healthy_running is not None:
            async with asyncio.timeout(10):
                await healthy_running
    assert (slow.done, healthy.done) == (0, 1)
    assert await backend.next_answers("fe-a", block_s=0.01) == []  # no second answer


async def test_a_job_that_stops_worker_after_worker_is_set_aside_and_its_user_told(
    server: RedisServer, backend: RedisBackend, front_end: RemoteGenerator
) -> None:
    asked = asyncio.create_task(
        front_end.generate(flux(), GenerationParams("a fox", request_id="j1"))
    )
    # Three workers take the job and die with it.
    for dead in ("w1", "w2", "w3"):
        taken = None
        async with asyncio.timeout(10):
            while taken is None:
                taken = await backend.take("flux", dead, lease_s=60, block_s=0.05)
        await fall_silent(server, backend, taken.entry_id, dead)
    generator = FakeGenerator()
    worker = GenerationWorker(backend, registry(), generator, lease_s=60, max_deliveries=3)
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run(stop))
    try:
        async with asyncio.timeout(10):
            result = await asked
    finally:
        stop.set()
        async with asyncio.timeout(10):
            await running
    assert not result.success
    assert isinstance(result.error, JobSetAside)
    assert result.error.user_message.startswith("This request stopped the Flux worker 3 times")
    assert generator.calls == []  # not tried a fourth time


async def test_a_worker_failure_comes_back_as_its_own_class_and_words(
    backend: RedisBackend, front_end: RemoteGenerator
) -> None:
    failure = WorkerBadRequest("400 from the worker", model="Flux")
    worker = GenerationWorker(backend, registry(), FakeGenerator(errors=[failure]))
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run(stop))
    try:
        async with asyncio.timeout(10):
            result = await front_end.generate(flux(), GenerationParams("a fox", request_id="j1"))
    finally:
        stop.set()
        async with asyncio.timeout(10):
            await running
    assert isinstance(result.error, WorkerBadRequest)
    assert result.error.user_message == failure.user_message
    assert result.error.kind == "worker_bad_request"
    # Told in every language, so a Persian chat hears it in Persian.
    persian = load_texts("fa")
    assert result.error.message_in(persian) == failure.message_in(persian)


@dataclass
class FirstTakeBreaks:
    """The shared queue, but the first take fails with an error nobody expected."""

    backend: RedisBackend
    broke: int = 0

    def __getattr__(self, name: str) -> object:
        return getattr(self.backend, name)

    async def take(
        self, model: str, worker_id: str, *, lease_s: float, block_s: float
    ) -> Taken | None:
        if not self.broke:
            self.broke += 1
            raise RuntimeError("a bug in the taking")
        return await self.backend.take(model, worker_id, lease_s=lease_s, block_s=block_s)


async def test_a_lane_that_hits_an_unexpected_error_logs_it_and_goes_on(
    backend: RedisBackend, front_end: RemoteGenerator, caplog: pytest.LogCaptureFixture
) -> None:
    shared = FirstTakeBreaks(backend)
    worker = GenerationWorker(shared, registry(flux_concurrency=1), FakeGenerator())  # type: ignore[arg-type]
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run(stop))
    try:
        async with asyncio.timeout(20):
            result = await front_end.generate(flux(), GenerationParams("a fox", request_id="j1"))
    finally:
        stop.set()
        async with asyncio.timeout(10):
            await running
    assert result.success
    assert "worker lane for flux failed; going on" in caplog.text
    assert "a bug in the taking" in caplog.text

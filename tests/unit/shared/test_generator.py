"""A front end's generator on a real redis-server: the loss check, deadlines, stopping."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from uuid import uuid4

import pytest

from sakaibot.errors import JobCancelled, QueueFull, StoreUnavailable, WorkerTimeout
from sakaibot.generation import GenerationParams
from sakaibot.models import ModelSpec
from sakaibot.shared.backend import RedisBackend
from sakaibot.shared.generator import RemoteGenerator
from sakaibot.shared.interfaces import Answer
from sakaibot.shared.worker import GenerationWorker
from tests.support.fakes import FakeGenerator, registry
from tests.support.redis_server import RedisServer


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with RedisServer(tmp_path_factory.mktemp("redis")) as running:
        yield running


@pytest.fixture
async def backend(server: RedisServer) -> AsyncIterator[RedisBackend]:
    opened = RedisBackend(server.url, prefix=f"t-{uuid4().hex[:8]}")
    await opened.open()
    await opened.open_answers("fe-a")
    yield opened
    await opened.close()


def flux() -> ModelSpec:
    model = registry().get("flux")
    assert model is not None
    return model


@dataclass
class AnswerWinsTheRace:
    """The shared queue, but each position lookup returns only after an answer has been
    read and acknowledged meanwhile: the answer races the loss check, and wins."""

    backend: RedisBackend
    acked: asyncio.Event = field(default_factory=asyncio.Event)
    enqueued: int = 0

    def __getattr__(self, name: str) -> object:
        return getattr(self.backend, name)

    async def enqueue(self, *args: object, **kwargs: object) -> int:
        self.enqueued += 1
        return await self.backend.enqueue(*args, **kwargs)  # type: ignore[arg-type]

    async def position(self, model: str, job_id: str) -> int | None:
        await self.acked.wait()
        return await self.backend.position(model, job_id)  # None: the record is gone

    async def ack_answer(self, frontend_id: str, answer: Answer) -> None:
        await self.backend.ack_answer(frontend_id, answer)
        self.acked.set()


async def test_an_answer_that_comes_during_the_loss_check_is_not_asked_again(
    backend: RedisBackend,
) -> None:
    racing = AnswerWinsTheRace(backend)
    remote = RemoteGenerator(
        racing,  # type: ignore[arg-type]
        frontend_id="fe-a", max_waiting=10, max_pending=10, position_poll_s=0.01,
    )  # fmt: skip
    generator = FakeGenerator()
    worker = GenerationWorker(backend, registry(), generator)
    stop = asyncio.Event()
    remote.start()
    running = asyncio.create_task(worker.run(stop))
    try:
        async with asyncio.timeout(10):
            result = await remote.generate(flux(), GenerationParams("a fox", request_id="j1"))
    finally:
        stop.set()
        async with asyncio.timeout(10):
            await running
        await remote.aclose()
    assert result.success
    assert racing.enqueued == 1
    assert len(generator.calls) == 1


async def test_a_request_nobody_answers_ends_at_its_deadline_and_leaves_the_queue(
    backend: RedisBackend,
) -> None:
    remote = RemoteGenerator(
        backend, frontend_id="fe-a", max_waiting=10, max_pending=10,
        answer_deadline_s=0.3, position_poll_s=0.05,
    )  # fmt: skip
    remote.start()
    try:
        async with asyncio.timeout(10):
            result = await remote.generate(flux(), GenerationParams("a fox", request_id="j1"))
    finally:
        await remote.aclose()
    assert isinstance(result.error, WorkerTimeout)
    assert await backend.position("flux", "j1") is None


async def test_a_full_shared_queue_refuses_at_hand_over_with_the_usual_words(
    backend: RedisBackend,
) -> None:
    remote = RemoteGenerator(backend, frontend_id="fe-a", max_waiting=1, max_pending=10)
    await backend.enqueue(
        "flux", "other", "{}", user_id="bob", frontend_id="fe-b", max_waiting=1, max_pending=10
    )
    result = await remote.generate(flux(), GenerationParams("a fox", request_id="j1"))
    assert result.error is not None
    assert result.error.kind == "queue_full"
    assert result.error.user_message == QueueFull("Flux", 1).user_message


async def test_a_request_taken_back_ends_as_cancelled(backend: RedisBackend) -> None:
    queued = asyncio.Event()
    remote = RemoteGenerator(
        backend, frontend_id="fe-a", max_waiting=10, max_pending=10,
        on_position=lambda job_id, place: queued.set(),
    )  # fmt: skip
    remote.start()
    try:
        asked = asyncio.create_task(
            remote.generate(flux(), GenerationParams("a fox", request_id="j1"))
        )
        async with asyncio.timeout(10):
            await queued.wait()
            assert await remote.cancel("flux", "j1")
            result = await asked
    finally:
        await remote.aclose()
    assert isinstance(result.error, JobCancelled)


@dataclass
class ReadStuckInFlight:
    """The shared queue, but reading answers hangs and swallows every cancel."""

    backend: RedisBackend
    release: asyncio.Event = field(default_factory=asyncio.Event)

    async def unacked_answers(self, frontend_id: str) -> list[Answer]:
        return []

    async def next_answers(self, frontend_id: str, *, block_s: float) -> list[Answer]:
        while not self.release.is_set():
            try:
                await self.release.wait()
            except asyncio.CancelledError:
                continue  # the cancel is lost
        return []


async def test_stopping_a_front_end_never_hangs(backend: RedisBackend) -> None:
    stuck = ReadStuckInFlight(backend)
    remote = RemoteGenerator(
        stuck,  # type: ignore[arg-type]
        frontend_id="fe-a", max_waiting=10, max_pending=10, stop_wait_s=0.1,
    )  # fmt: skip
    remote.start()
    try:
        async with asyncio.timeout(5):
            await remote.aclose()
    finally:
        stuck.release.set()


@dataclass
class CancelBecomesAnError:
    """The shared queue, but a cancel that lands in a position look-up comes out as
    an ordinary "unreachable" failure, as a library's own timeout may turn it."""

    backend: RedisBackend
    looking_up: asyncio.Event = field(default_factory=asyncio.Event)

    def __getattr__(self, name: str) -> object:
        return getattr(self.backend, name)

    async def position(self, model: str, job_id: str) -> int | None:
        self.looking_up.set()
        try:
            await asyncio.Event().wait()  # Redis never answers
        except asyncio.CancelledError:
            raise StoreUnavailable("Redis is unreachable: timed out") from None
        raise AssertionError("unreachable")


async def test_halting_ends_a_waiting_request_even_when_its_cancel_is_lost(
    backend: RedisBackend,
) -> None:
    shared = CancelBecomesAnError(backend)
    remote = RemoteGenerator(
        shared,  # type: ignore[arg-type]
        frontend_id="fe-a", max_waiting=10, max_pending=10, position_poll_s=0.01,
    )  # fmt: skip
    remote.start()
    try:
        waiting = asyncio.create_task(
            remote.generate(flux(), GenerationParams("a fox", request_id="j1"))
        )
        async with asyncio.timeout(10):
            await shared.looking_up.wait()
        # What stopping the front end does: halt, then cancel the job's task.
        remote.halt()
        waiting.cancel()
        async with asyncio.timeout(5):
            done, _ = await asyncio.wait({waiting})
        assert waiting in done
        assert waiting.cancelled()
    finally:
        await remote.aclose()
    # Abandoned here, not taken back: it runs after the restart and its answer is read then.
    assert await backend.position("flux", "j1") == 1


@dataclass
class FirstReadBreaks:
    """The shared queue, but the first read of answers fails with an unexpected error."""

    backend: RedisBackend
    broke: int = 0

    def __getattr__(self, name: str) -> object:
        return getattr(self.backend, name)

    async def next_answers(self, frontend_id: str, *, block_s: float) -> list[Answer]:
        if not self.broke:
            self.broke += 1
            raise RuntimeError("a bug in the reading")
        return await self.backend.next_answers(frontend_id, block_s=block_s)


async def test_the_answer_listener_outlives_an_unexpected_error(
    backend: RedisBackend, caplog: pytest.LogCaptureFixture
) -> None:
    shared = FirstReadBreaks(backend)
    remote = RemoteGenerator(
        shared,  # type: ignore[arg-type]
        frontend_id="fe-a", max_waiting=10, max_pending=10, position_poll_s=0.05,
    )  # fmt: skip
    worker = GenerationWorker(backend, registry(), FakeGenerator())
    stop = asyncio.Event()
    remote.start()
    working = asyncio.create_task(worker.run(stop))
    try:
        async with asyncio.timeout(20):
            result = await remote.generate(flux(), GenerationParams("a fox", request_id="j1"))
    finally:
        stop.set()
        await remote.aclose()
        async with asyncio.timeout(10):
            await working
    assert result.success
    assert shared.broke == 1
    assert "reading the shared queue's answers failed; retrying" in caplog.text

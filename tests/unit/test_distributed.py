"""Shared generation: front ends ask, workers claim under a lease, answers come back once.

The shared queue here is a plain in-memory fake with the same contract as the
Redis adapter (whose own tests run against a real redis-server).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from sakaibot.distributed import GenerationWorker, RemoteGenerator
from sakaibot.errors import ContentFiltered
from sakaibot.generation import GenerationParams
from tests.support.fakes import FakeClock, FakeGenerator, registry
from tests.support.waiting import until


@dataclass
class MemoryQueue:
    """The shared-queue contract, in memory: FIFO per model, leases, results."""

    clock: FakeClock
    waiting: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    leases: dict[str, tuple[str, str, float, str]] = field(default_factory=dict)
    results: dict[str, list[tuple[str, str, bytes | None]]] = field(default_factory=dict)
    processing: dict[str, list[tuple[str, str, bytes | None]]] = field(default_factory=dict)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def enqueue(
        self,
        model: str,
        job_id: str,
        payload: str,
        *,
        user_id: str,
        max_waiting: int,
        max_pending: int,
    ) -> int:
        line = self.waiting.setdefault(model, [])
        line.append((job_id, payload))
        return len(line)

    async def position(self, model: str, job_id: str) -> int | None:
        ids = [job for job, _ in self.waiting.get(model, [])]
        return ids.index(job_id) + 1 if job_id in ids else None

    async def known(self, job_id: str) -> bool:
        waiting = any(job == job_id for line in self.waiting.values() for job, _ in line)
        return waiting or job_id in self.leases

    async def cancel(self, model: str, job_id: str, user_id: str) -> bool:
        line = self.waiting.get(model, [])
        kept = [(job, payload) for job, payload in line if job != job_id]
        self.waiting[model] = kept
        return len(kept) != len(line)

    async def claim(
        self, model: str, worker_id: str, lease_s: float, now_s: float
    ) -> tuple[str, str] | None:
        line = self.waiting.get(model, [])
        if not line:
            return None
        job_id, payload = line.pop(0)
        self.leases[job_id] = (model, payload, now_s + lease_s, worker_id)
        return job_id, payload

    async def renew(
        self, model: str, job_id: str, worker_id: str, lease_s: float, now_s: float
    ) -> bool:
        lease = self.leases.get(job_id)
        if lease is None or lease[3] != worker_id:
            return False
        self.leases[job_id] = (lease[0], lease[1], now_s + lease_s, worker_id)
        return True

    async def complete(self, model: str, job_id: str, worker_id: str, user_id: str) -> bool:
        lease = self.leases.get(job_id)
        if lease is None or lease[3] != worker_id:
            return False
        del self.leases[job_id]
        return True

    async def reap(self, model: str, now_s: float) -> list[str]:
        expired = [j for j, lease in self.leases.items() if lease[0] == model and lease[2] <= now_s]
        for job_id in reversed(expired):
            _, payload, _, _ = self.leases.pop(job_id)
            self.waiting.setdefault(model, []).insert(0, (job_id, payload))
        return expired

    async def publish_result(
        self, frontend_id: str, job_id: str, result_json: str, image: bytes | None, ttl_s: float
    ) -> None:
        self.results.setdefault(frontend_id, []).append((job_id, result_json, image))
        self.arrived.set()

    async def next_result(
        self, frontend_id: str, timeout_s: float
    ) -> tuple[str, str, bytes | None] | None:
        line = self.results.setdefault(frontend_id, [])
        if not line:
            self.arrived.clear()
            try:
                await asyncio.wait_for(self.arrived.wait(), timeout=timeout_s)
            except TimeoutError:
                return None
        if not line:
            return None
        item = line.pop(0)
        self.processing.setdefault(frontend_id, []).append(item)
        return item

    async def ack_result(self, frontend_id: str, job_id: str) -> None:
        line = self.processing.get(frontend_id, [])
        self.processing[frontend_id] = [item for item in line if item[0] != job_id]

    async def unacked_results(self, frontend_id: str) -> list[tuple[str, str, bytes | None]]:
        return list(self.processing.get(frontend_id, []))


FLUX = registry().get("flux")
assert FLUX is not None


async def test_a_request_goes_through_a_worker_and_back() -> None:
    clock = FakeClock()
    shared = MemoryQueue(clock)
    front = RemoteGenerator(shared, frontend_id="bot-a", max_waiting=50, max_pending=50)
    worker = GenerationWorker(shared, registry(), FakeGenerator(), clock=clock)
    front.start()
    stop = asyncio.Event()
    working = asyncio.create_task(worker.run(stop))
    try:
        result = await asyncio.wait_for(
            front.generate(FLUX, GenerationParams("a fox", request_id="job1")), timeout=5
        )
    finally:
        stop.set()
        await asyncio.wait_for(working, timeout=5)
        await front.aclose()
    assert result.success
    assert result.data is not None
    assert result.data.extension == ".jpg"
    assert worker.done == 1
    assert shared.leases == {}


async def test_a_worker_error_comes_back_with_its_message() -> None:
    clock = FakeClock()
    shared = MemoryQueue(clock)
    front = RemoteGenerator(shared, frontend_id="bot-a", max_waiting=50, max_pending=50)
    failing = FakeGenerator(errors=[ContentFiltered("nsfw", model="Flux")])
    worker = GenerationWorker(shared, registry(), failing, clock=clock)
    front.start()
    stop = asyncio.Event()
    working = asyncio.create_task(worker.run(stop))
    try:
        result = await asyncio.wait_for(
            front.generate(FLUX, GenerationParams("a fox", request_id="job2")), timeout=5
        )
    finally:
        stop.set()
        await asyncio.wait_for(working, timeout=5)
        await front.aclose()
    assert not result.success
    assert result.error is not None
    assert result.error.kind == "content_filtered"
    assert result.error.user_message.startswith("Your prompt was filtered")


async def test_a_dead_workers_request_is_taken_over_and_answered_once() -> None:
    clock = FakeClock()
    shared = MemoryQueue(clock)
    front = RemoteGenerator(shared, frontend_id="bot-a", max_waiting=50, max_pending=50)
    front.start()
    asking = asyncio.create_task(front.generate(FLUX, GenerationParams("a fox", request_id="j3")))
    await until(lambda: shared.waiting.get("flux"), waiting_for="the request in the shared queue")
    # A worker claims it and dies without answering.
    claimed = await shared.claim("flux", "dead-worker", 120.0, clock())
    assert claimed is not None
    assert not asking.done()
    # The lease runs out; a healthy worker reaps it and answers.
    clock.advance(121.0)
    healthy = GenerationWorker(shared, registry(), FakeGenerator(), clock=clock)
    stop = asyncio.Event()
    working = asyncio.create_task(healthy.run(stop))
    try:
        result = await asyncio.wait_for(asking, timeout=5)
        # The dead worker "comes back" late: its answer finds no one waiting.
        assert await shared.complete("flux", "j3", "dead-worker", "bot-a") is False
        await shared.publish_result("bot-a", "j3", '{"ok": false}', None, 60)
    finally:
        stop.set()
        await asyncio.wait_for(working, timeout=5)
        await front.aclose()
    assert result.success
    assert healthy.done == 1


async def test_a_worker_rides_out_a_failed_hand_back() -> None:
    from sakaibot.errors import StoreUnavailable

    class FlakyQueue(MemoryQueue):
        failures = 1

        async def publish_result(
            self, frontend_id: str, job_id: str, result_json: str, image: bytes | None, ttl_s: float
        ) -> None:
            if self.failures:
                self.failures -= 1
                raise StoreUnavailable("Redis at 127.0.0.1:6379 is unreachable")
            await super().publish_result(frontend_id, job_id, result_json, image, ttl_s)

    clock = FakeClock()
    shared = FlakyQueue(clock)
    front = RemoteGenerator(shared, frontend_id="bot-a", max_waiting=50, max_pending=50)
    worker = GenerationWorker(shared, registry(), FakeGenerator(), lease_s=5, clock=clock)
    front.start()
    stop = asyncio.Event()
    asking = asyncio.create_task(front.generate(FLUX, GenerationParams("a fox", request_id="j9")))
    working = asyncio.create_task(worker.run(stop))
    try:
        await until(
            lambda: shared.failures == 0 and not asking.done(),
            waiting_for="the first answer to be lost on the way back",
        )
        clock.advance(6)  # its lease runs out; the same worker takes it again
        result = await asyncio.wait_for(asking, timeout=5)
    finally:
        stop.set()
        await asyncio.wait_for(working, timeout=5)
        await front.aclose()
    assert result.success
    assert working.exception() is None  # the worker kept going after the failed hand-back

"""Shared generation: front ends ask, workers claim under a lease, answers come back once.

The shared queue here is a plain in-memory fake with the same contract as the
Redis adapter (whose own tests run against a real redis-server).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

import pytest

from sakaibot import distributed
from sakaibot.distributed import GenerationWorker, OutageLog, RemoteGenerator
from sakaibot.errors import ContentFiltered
from sakaibot.generation import GenerationParams, GenerationResult
from sakaibot.models import ModelSpec
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


@dataclass
class AckedQueue(MemoryQueue):
    """Tells when a front end has acknowledged a result."""

    acked: asyncio.Event = field(default_factory=asyncio.Event)

    async def ack_result(self, frontend_id: str, job_id: str) -> None:
        await super().ack_result(frontend_id, job_id)
        self.acked.set()


@dataclass
class HeldGenerator(FakeGenerator):
    """A worker's generator that says when it has a request, and holds it."""

    holding: asyncio.Event = field(default_factory=asyncio.Event)

    async def generate(self, model: ModelSpec, params: GenerationParams) -> GenerationResult:
        self.holding.set()
        return await super().generate(model, params)


async def test_a_front_end_that_stops_waiting_drops_the_late_answer() -> None:
    # /image cancel of a job a worker is generating: the front end's generate is
    # cancelled; the worker's answer arrives later and is acknowledged, not used.
    clock = FakeClock()
    shared = AckedQueue(clock)
    front = RemoteGenerator(shared, frontend_id="bot-a", max_waiting=50, max_pending=50)
    held = HeldGenerator(gate=asyncio.Event())
    worker = GenerationWorker(shared, registry(), held, clock=clock)
    front.start()
    stop = asyncio.Event()
    working = asyncio.create_task(worker.run(stop))
    try:
        asking = asyncio.create_task(
            front.generate(FLUX, GenerationParams("a fox", request_id="j9"))
        )
        async with asyncio.timeout(5):
            await held.holding.wait()
        assert not await front.cancel("flux", "j9")  # a worker has it: not taken back
        asking.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asking
        assert held.gate is not None
        held.gate.set()
        async with asyncio.timeout(5):
            await shared.acked.wait()
    finally:
        stop.set()
        await asyncio.wait_for(working, timeout=5)
        await front.aclose()
    assert worker.done == 1
    assert shared.processing["bot-a"] == []  # the late answer was acknowledged and dropped


def outage_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.name == "sakaibot.distributed" and record.levelno == logging.WARNING
    ]


def test_outage_warnings_go_out_at_most_once_a_second(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    outage = OutageLog(clock)
    with caplog.at_level(logging.WARNING, logger="sakaibot.distributed"):
        for _ in range(35):  # 3.5 s of an outage, a retry every 0.1 s
            outage.warn("shared queue unreachable; retrying: %s", "Redis is down")
            clock.advance(0.1)
    lines = outage_lines(caplog)
    assert lines[0] == "shared queue unreachable; retrying: Redis is down"
    assert (
        lines[1:]
        == ["shared queue unreachable; retrying: Redis is down (and 9 more such warnings)"] * 3
    )
    assert len(lines) == 4


async def test_a_worker_lane_during_an_outage_warns_at_most_once_a_second(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sakaibot.errors import StoreUnavailable

    monkeypatch.setattr(distributed, "_IDLE_POLL_S", 0.0)  # retry at once: many tries
    clock = FakeClock()
    stop = asyncio.Event()

    class DownQueue(MemoryQueue):
        tries = 0

        async def claim(
            self, model: str, worker_id: str, lease_s: float, now_s: float
        ) -> tuple[str, str] | None:
            self.tries += 1
            clock.advance(0.05)
            if self.tries == 100:  # 5 s of an outage
                stop.set()
            raise StoreUnavailable("Redis at 127.0.0.1:6379 is unreachable")

    worker = GenerationWorker(
        DownQueue(clock), registry(flux_concurrency=2), FakeGenerator(), clock=clock
    )
    worker.outage = OutageLog(clock)
    with caplog.at_level(logging.WARNING, logger="sakaibot.distributed"):
        await asyncio.wait_for(worker.run(stop), timeout=10)
    lines = outage_lines(caplog)
    assert 5 <= len(lines) <= 6, lines  # about 5 s, two models with lanes of their own
    assert all(line.startswith("shared queue unreachable; retrying: ") for line in lines)

"""The per-model FIFO queues, drained deterministically (no sleeps)."""

from __future__ import annotations

import asyncio
import logging

import pytest

from sakaibot.commands import ImageRequest
from sakaibot.errors import NothingToCancel, QueueFull, TooManyPending
from sakaibot.jobs import Job, JobState
from sakaibot.queues import JobQueues, QueuePlace, is_report_point, report_points
from tests.support.fakes import FakeClock, registry


def make_job(job_id: str, model: str = "flux", user: str = "ann") -> Job:
    reg = registry()
    spec = reg.get(model)
    assert spec is not None
    return Job(
        id=job_id,
        user_id=user,
        chat_id="c",
        reply_to=1,
        request=ImageRequest(model=model, prompt="p"),
        model=spec,
        created_at_s=0.0,
    )


class Recorder:
    def __init__(self) -> None:
        self.order: list[str] = []
        self.places: list[tuple[str, int]] = []
        self.gates: dict[str, asyncio.Event] = {}
        self.started: dict[str, asyncio.Event] = {}
        self.finished: dict[str, asyncio.Event] = {}

    def started_event(self, job_id: str) -> asyncio.Event:
        return self.started.setdefault(job_id, asyncio.Event())

    async def run(self, job: Job) -> None:
        self.started_event(job.id).set()
        gate = self.gates.get(job.id)
        if gate is not None:
            await gate.wait()
        job.advance(JobState.GENERATING)
        self.order.append(job.id)
        self.finished.setdefault(job.id, asyncio.Event()).set()

    def on_position(self, job: Job, place: QueuePlace) -> None:
        self.places.append((job.id, place.position))


def make_queues(
    recorder: Recorder, *, max_waiting: int = 50, max_pending: int = 100, **conc: int
) -> JobQueues:
    return JobQueues(
        registry(**conc),
        max_waiting_per_model=max_waiting,
        max_pending_per_user=max_pending,
        on_position=recorder.on_position,
        clock=FakeClock(),
    )


def test_report_points_are_dense_then_sparse() -> None:
    assert report_points(30) == [1, 2, 3, 4, 5, 6, 7, 9, 11, 13, 16, 20, 25]
    assert all(is_report_point(p) for p in report_points(500))
    assert not is_report_point(8)
    assert not is_report_point(0)
    assert len(report_points(10_000)) <= 40


async def test_fifo_within_a_model() -> None:
    recorder = Recorder()
    queues = make_queues(recorder)
    for n in range(5):
        queues.submit(make_job(f"j{n}"))
    queues.start(recorder.run)
    await queues.drain()
    assert recorder.order == ["j0", "j1", "j2", "j3", "j4"]


async def test_models_run_in_parallel() -> None:
    recorder = Recorder()
    queues = make_queues(recorder)
    recorder.gates["f1"] = asyncio.Event()
    queues.submit(make_job("f1", "flux"))
    queues.submit(make_job("s1", "sdxl"))
    queues.start(recorder.run)
    drained = asyncio.create_task(queues.drain())
    await recorder.started_event("f1").wait()
    # sdxl finishes while flux is still held.
    await recorder.finished.setdefault("s1", asyncio.Event()).wait()
    assert recorder.order == ["s1"]
    recorder.gates["f1"].set()
    await drained
    assert recorder.order == ["s1", "f1"]


async def test_concurrency_per_model_is_respected() -> None:
    recorder = Recorder()
    queues = make_queues(recorder, flux_concurrency=2)
    for n in range(3):
        recorder.gates[f"j{n}"] = asyncio.Event()
        queues.submit(make_job(f"j{n}"))
    queues.start(recorder.run)
    drained = asyncio.create_task(queues.drain())
    await recorder.started_event("j0").wait()
    await recorder.started_event("j1").wait()
    assert "j2" not in recorder.started
    assert queues.place_of(queues.find("j2")) == QueuePlace(position=1, eta_s=20.0)  # type: ignore[arg-type]
    for gate in recorder.gates.values():
        gate.set()
    await drained


def test_positions_and_eta_on_submit() -> None:
    recorder = Recorder()
    queues = make_queues(recorder)
    places = [queues.submit(make_job(f"j{n}", user=f"u{n}")) for n in range(3)]
    assert [p.position for p in places] == [1, 2, 3]
    assert [p.eta_s for p in places] == [10.0, 20.0, 30.0]


async def test_cancel_moves_everyone_behind_up() -> None:
    recorder = Recorder()
    queues = make_queues(recorder)
    for n in range(4):
        queues.submit(make_job(f"j{n}", user=f"u{n}"))
    cancelled = queues.cancel("u1", "j1")
    assert cancelled.state is JobState.CANCELLED
    assert recorder.places == [("j2", 2), ("j3", 3)]
    assert queues.find("j1") is None
    queues.start(recorder.run)
    await queues.drain()
    assert recorder.order == ["j0", "j2", "j3"]


def test_cancel_newest_waiting_and_errors() -> None:
    recorder = Recorder()
    queues = make_queues(recorder)
    queues.submit(make_job("a1"))
    queues.submit(make_job("a2"))
    assert queues.cancel("ann", None).id == "a2"
    with pytest.raises(NothingToCancel) as info:
        queues.cancel("ann", "zz")
    assert "no waiting or running job zz" in info.value.user_message
    with pytest.raises(NothingToCancel):
        queues.cancel("bob", "a1")  # not bob's job
    queues.cancel("ann", None)
    with pytest.raises(NothingToCancel) as info:
        queues.cancel("ann", None)
    assert "no images waiting or being made" in info.value.user_message


async def test_a_started_job_is_not_the_queues_to_cancel() -> None:
    recorder = Recorder()
    queues = make_queues(recorder)
    recorder.gates["a1"] = asyncio.Event()
    queues.submit(make_job("a1"))
    queues.start(recorder.run)
    await recorder.started_event("a1").wait()
    queues.find("a1").state = JobState.GENERATING  # type: ignore[union-attr]
    with pytest.raises(NothingToCancel) as info:
        queues.cancel("ann", "a1")
    assert info.value.running  # the pipeline's to stop (JobPipeline.cancel_running)
    with pytest.raises(NothingToCancel):
        queues.cancel("ann", None)  # no id: only waiting jobs are the queue's
    recorder.gates["a1"].set()
    await queues.drain()


def test_queue_bound() -> None:
    recorder = Recorder()
    queues = make_queues(recorder, max_waiting=2)
    queues.submit(make_job("a", user="u1"))
    queues.submit(make_job("b", user="u2"))
    with pytest.raises(QueueFull) as info:
        queues.submit(make_job("c", user="u3"))
    assert "Flux queue is full (2 waiting)" in info.value.user_message
    queues.submit(make_job("d", "sdxl", user="u3"))  # other model unaffected


def test_pending_bound_per_user_counts_all_models() -> None:
    recorder = Recorder()
    queues = make_queues(recorder, max_pending=2)
    queues.submit(make_job("a", "flux"))
    queues.submit(make_job("b", "sdxl"))
    with pytest.raises(TooManyPending) as info:
        queues.check_admission("flux", "ann")
    assert "2 images waiting or generating (the limit is 2)" in info.value.user_message
    queues.check_admission("flux", "bob")


async def test_finished_jobs_leave_no_trace() -> None:
    """Defect 3: the original queues only grew."""
    recorder = Recorder()
    queues = make_queues(recorder)
    for n in range(40):
        queues.submit(make_job(f"j{n}", "flux" if n % 2 else "sdxl", user=f"u{n}"))
    queues.start(recorder.run)
    await queues.drain()
    assert queues.live_job_count() == 0
    assert queues.jobs_of("u1") == []
    assert all(load.waiting == 0 and load.running == 0 for load in queues.loads())
    # The user's pending count is back to zero: a new job is admitted.
    queues.check_admission("flux", "u1")


async def test_long_queue_announces_sparsely() -> None:
    """Defect 4: one shift must not re-announce every waiting job."""
    recorder = Recorder()
    queues = make_queues(recorder, max_waiting=1000, max_pending=1000)
    for n in range(500):
        queues.submit(make_job(f"j{n}"))
    queues.start(recorder.run)
    await queues.drain()
    # Each of 500 shifts announces only report points: about 30, not 500.
    assert len(recorder.places) < 500 * 30
    announced_at = {pos for _, pos in recorder.places}
    assert announced_at <= set(report_points(500))


async def test_a_runner_bug_does_not_kill_the_worker() -> None:
    order: list[str] = []

    async def run(job: Job) -> None:
        order.append(job.id)
        if job.id == "bad":
            raise RuntimeError("bug")

    queues = JobQueues(
        registry(),
        max_waiting_per_model=10,
        max_pending_per_user=10,
        on_position=lambda job, place: None,
        clock=FakeClock(),
    )
    queues.submit(make_job("bad"))
    queues.submit(make_job("good"))
    queues.start(run)
    await queues.drain()
    assert order == ["bad", "good"]


async def test_a_hard_stop_ends_even_if_a_running_job_never_sees_its_cancel(
    caplog: pytest.LogCaptureFixture,
) -> None:
    started = asyncio.Event()
    release = asyncio.Event()

    async def run(job: Job) -> None:
        started.set()
        while not release.is_set():
            try:
                await release.wait()
            except asyncio.CancelledError:
                continue  # lost, as a cancel turned into a library's timeout error is

    queues = make_queues(Recorder())
    queues.submit(make_job("deaf"))
    queues.start(run)
    await started.wait()
    with caplog.at_level(logging.WARNING, logger="sakaibot.stopping"):
        async with asyncio.timeout(10):
            await queues.stop(timeout_s=0.2)
    assert "queue-flux-0 did not stop within 0.2 s; left behind" in caplog.text
    release.set()  # the job left behind ends by itself

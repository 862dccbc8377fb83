"""One bounded FIFO per model, worked by a fixed number of tasks, with positions and ETAs.

Positions are computed from the queue itself, never polled (defect 4 of the
original design): when the queue shifts, only the jobs that land on a
*report point* (1–7, then ever sparser: 9, 11, 13, 16, 20, …) are told their
new position, so a long queue costs a handful of notifications per shift,
not one per waiting job. A finished job is dropped from every index at once
(defect 3): nothing grows with the number of jobs ever served.

Finding a waiting job's position is O(1): each job keeps a sequence number,
and its position is that number less the head's. Only cancelling from the
middle of a line renumbers the jobs behind it.

Workers are plain tasks that ``drain()`` can run dry and stop, which is what
makes queue tests deterministic without sleeping.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from itertools import islice
from typing import Protocol

from sakaibot.errors import NothingToCancel, QueueFull, TooManyPending
from sakaibot.jobs import Job, JobState
from sakaibot.models import ModelRegistry, ModelSpec
from sakaibot.stopping import stop_tasks

logger = logging.getLogger(__name__)

#: The longest a hard stop waits for the model workers to see their cancel.
STOP_WAIT_S = 5.0

#: How much one new duration moves the estimate (exponentially weighted mean).
_ESTIMATE_WEIGHT = 0.3


def report_points(up_to: int) -> list[int]:
    """Queue positions worth telling a user about: 1–7, then about 25 % apart."""
    points: list[int] = []
    position = 1
    while position <= up_to:
        points.append(position)
        position = position + 1 if position < 7 else position + max(2, position // 4)
    return points


def is_report_point(position: int) -> bool:
    if position <= 7:
        return position >= 1
    point = 7
    while point < position:
        point += max(2, point // 4)
    return point == position


@dataclass(frozen=True)
class QueuePlace:
    """Where a waiting job stands: 1-based position and the seconds until its image."""

    position: int
    eta_s: float


@dataclass(frozen=True)
class ModelLoad:
    """One model's queue as ``/image models`` shows it."""

    model: ModelSpec
    waiting: int
    running: int
    #: Seconds until an image requested now would be ready.
    eta_new_s: float
    estimate_s: float


PositionListener = Callable[[Job, QueuePlace], None]
JobRunner = Callable[[Job], Awaitable[None]]


class LineWatcher(Protocol):
    """Told when a model's waiting line changes (:class:`~sakaibot.enhance_ahead.EnhanceAhead`)."""

    def line_changed(self, line: WaitingLine) -> None: ...

    def forget(self, job: Job) -> None: ...


class WaitingLine(Protocol):
    """What a :class:`LineWatcher` may read of a model's line."""

    def first(self, count: int) -> Sequence[Job]: ...


class _ModelLane:
    """The waiting line, running set and duration estimate of one model."""

    def __init__(self, model: ModelSpec) -> None:
        self.model = model
        self.waiting: deque[Job] = deque()
        #: Each waiting job's sequence number; the head's is ``head_seq``.
        self.seq: dict[str, int] = {}
        self.head_seq = 0
        self.running: set[Job] = set()
        self.estimate_s = model.typical_duration_s
        self.not_empty = asyncio.Event()
        self.closing = False

    def eta_s(self, position: int) -> float:
        # Jobs run in rounds of `concurrency`, the running ones first; this one
        # is ready at the end of its round.
        rounds = math.ceil((len(self.running) + position) / self.model.concurrency)
        return rounds * self.estimate_s

    def place(self, position: int) -> QueuePlace:
        return QueuePlace(position=position, eta_s=self.eta_s(position))

    def first(self, count: int) -> list[Job]:
        return list(islice(self.waiting, count))

    def position_of(self, job: Job) -> int | None:
        seq = self.seq.get(job.id)
        return None if seq is None else seq - self.head_seq + 1

    def append(self, job: Job) -> int:
        self.seq[job.id] = self.head_seq + len(self.waiting)
        self.waiting.append(job)
        return len(self.waiting)

    def pop_head(self) -> Job:
        job = self.waiting.popleft()
        del self.seq[job.id]
        self.head_seq += 1
        return job

    def remove(self, job: Job) -> int:
        """Take ``job`` out of the line; returns the index it had."""
        index = self.seq.pop(job.id) - self.head_seq
        del self.waiting[index]
        for behind in islice(self.waiting, index, None):
            self.seq[behind.id] -= 1
        return index

    def observe_duration(self, duration_s: float) -> None:
        self.estimate_s += _ESTIMATE_WEIGHT * (duration_s - self.estimate_s)

    async def next_job(self) -> Job | None:
        while True:
            # A job starts only once it is safe in the store; the ones behind it wait.
            if self.waiting and self.waiting[0].stored:
                return self.pop_head()
            if self.closing and not self.waiting:
                return None
            self.not_empty.clear()
            await self.not_empty.wait()


class JobQueues:
    """All the models' queues: admission bounds, FIFO order, cancellation, workers."""

    def __init__(
        self,
        registry: ModelRegistry,
        *,
        max_waiting_per_model: int,
        max_pending_per_user: int,
        on_position: PositionListener,
        clock: Callable[[], float],
        watcher: LineWatcher | None = None,
    ) -> None:
        self._watcher = watcher
        self._lanes = {model.name: _ModelLane(model) for model in registry}
        self._max_waiting = max_waiting_per_model
        self._max_pending = max_pending_per_user
        self._on_position = on_position
        self._clock = clock
        self._jobs: dict[str, Job] = {}
        self._pending_by_user: dict[str, int] = {}
        self._workers: list[asyncio.Task[None]] = []

    # -- admission -----------------------------------------------------------

    def check_admission(self, model_name: str, user_id: str, count: int = 1) -> None:
        """Raise the rejection ``count`` new jobs (an album's) would meet; changes nothing."""
        lane = self._lanes[model_name]
        if len(lane.waiting) + count > self._max_waiting:
            raise QueueFull(lane.model.display_name, self._max_waiting)
        pending = self._pending_by_user.get(user_id, 0)
        if pending + count > self._max_pending:
            raise TooManyPending(pending, self._max_pending, asked=count)

    def is_free_id(self, job_id: str) -> bool:
        return job_id not in self._jobs

    def submit(self, job: Job) -> QueuePlace:
        """Queue an admitted job (call :meth:`check_admission` first) and say where it stands."""
        self.check_admission(job.model.name, job.user_id)
        return self._enqueue(job)

    # -- looking and cancelling ----------------------------------------------

    def find(self, job_id: str) -> Job | None:
        return self._jobs.get(job_id)

    def user_of(self, job_id: str) -> str | None:
        """Who asked for a job this process holds (the shared queue bounds users, not jobs)."""
        job = self._jobs.get(job_id)
        return None if job is None else job.user_id

    def place_of(self, job: Job) -> QueuePlace | None:
        """Where a waiting job stands now; ``None`` once it has started."""
        lane = self._lanes[job.model.name]
        position = lane.position_of(job)
        return None if position is None else lane.place(position)

    def jobs_of(self, user_id: str) -> list[tuple[Job, QueuePlace | None]]:
        """The user's live jobs, oldest first, with the place of each waiting one."""
        mine = [job for job in self._jobs.values() if job.user_id == user_id]
        return [(job, self.place_of(job)) for job in mine]

    def cancel(self, user_id: str, job_id: str | None) -> Job:
        """Cancel the user's waiting job ``job_id``, or their newest waiting job.

        A job that has left its waiting line (``running=True`` in the error) is
        the pipeline's to stop: :meth:`~sakaibot.pipeline.JobPipeline.cancel_running`.
        """
        if job_id is not None:
            job = self._jobs.get(job_id)
            if job is None or job.user_id != user_id or job.state.finished:
                raise NothingToCancel(job_id)
            if not self._is_waiting(job):
                raise NothingToCancel(job_id, running=True)
        else:
            waiting = [
                job
                for job in self._jobs.values()
                if job.user_id == user_id and self._is_waiting(job)
            ]
            if not waiting:
                raise NothingToCancel(None)
            job = waiting[-1]
        lane = self._lanes[job.model.name]
        index = lane.remove(job)
        job.advance(JobState.CANCELLED)
        job.finished_at_s = self._clock()
        self._forget(job)
        self._announce_shift(lane, index)
        self._line_changed(lane)
        return job

    def _is_waiting(self, job: Job) -> bool:
        # A job just taken by a worker is still QUEUED (cache lookup, paused model).
        return job.state is JobState.QUEUED and job.id in self._lanes[job.model.name].seq

    def stored(self, job: Job) -> None:
        """``job`` is now in the store: it may start."""
        lane = self._lanes[job.model.name]
        lane.not_empty.set()
        self._line_changed(lane)

    def withdraw(self, job: Job) -> None:
        """Take back a job that could not be stored; it was never announced."""
        lane = self._lanes[job.model.name]
        lane.not_empty.set()
        if job.id in lane.seq:
            self._announce_shift(lane, lane.remove(job))
        if job.state is JobState.QUEUED:
            job.advance(JobState.CANCELLED)
        if job not in lane.running:
            self._forget(job)

    def submit_recovered(self, job: Job) -> QueuePlace:
        """Queue a job read back from the store on start; bounds do not apply to it."""
        place = self._enqueue(job)
        self._line_changed(self._lanes[job.model.name])
        return place

    def _enqueue(self, job: Job) -> QueuePlace:
        lane = self._lanes[job.model.name]
        position = lane.append(job)
        self._jobs[job.id] = job
        self._pending_by_user[job.user_id] = self._pending_by_user.get(job.user_id, 0) + 1
        lane.not_empty.set()
        return lane.place(position)

    def close_waiting(self) -> list[Job]:
        """Take every waiting job off its queue (shutdown); running jobs go on.

        The jobs stay as they are in the store, so the next start runs them.
        """
        removed: list[Job] = []
        for lane in self._lanes.values():
            lane.closing = True
            lane.not_empty.set()
            for job in lane.waiting:
                self._forget(job)
                removed.append(job)
            lane.waiting.clear()
            lane.seq.clear()
        return removed

    def waiting_jobs(self, model_name: str) -> list[Job]:
        """The jobs waiting for ``model_name``, in order."""
        lane = self._lanes.get(model_name)
        return list(lane.waiting) if lane is not None else []

    def loads(self) -> list[ModelLoad]:
        return [
            ModelLoad(
                model=lane.model,
                waiting=len(lane.waiting),
                running=len(lane.running),
                eta_new_s=lane.eta_s(len(lane.waiting) + 1),
                estimate_s=lane.estimate_s,
            )
            for lane in self._lanes.values()
        ]

    def live_job_count(self) -> int:
        """Jobs waiting or running (for tests of bounded memory)."""
        return len(self._jobs)

    # -- workers -------------------------------------------------------------

    def start(self, run_job: JobRunner) -> None:
        """Start each model's workers; each runs its jobs, in order, with ``run_job``."""
        for lane in self._lanes.values():
            for slot in range(lane.model.concurrency):
                name = f"queue-{lane.model.name}-{slot}"
                self._workers.append(asyncio.create_task(self._work(lane, run_job), name=name))

    async def drain(self) -> None:
        """Let the workers finish every waiting job, then stop them."""
        for lane in self._lanes.values():
            lane.closing = True
            lane.not_empty.set()
        await asyncio.gather(*self._workers)
        self._workers.clear()

    async def stop(self, *, timeout_s: float = STOP_WAIT_S) -> None:
        """Stop the workers now (within ``timeout_s``); waiting jobs stay where they are."""
        await stop_tasks(self._workers, timeout_s=timeout_s, what="queue stop")
        self._workers.clear()

    async def _work(self, lane: _ModelLane, run_job: JobRunner) -> None:
        while (job := await lane.next_job()) is not None:
            lane.running.add(job)
            self._announce_shift(lane, 0)
            self._line_changed(lane)
            started_s = self._clock()
            job.started_at_s = started_s
            try:
                await run_job(job)
            except Exception:
                # The runner owns every failure; this is the last guard so a bug
                # in it cannot kill the model's worker and strand the queue.
                logger.exception("job %s: runner raised", job.id)
            finally:
                lane.running.discard(job)
                lane.observe_duration(self._clock() - started_s)
                self._forget(job)

    def _line_changed(self, lane: _ModelLane) -> None:
        if self._watcher is not None:
            self._watcher.line_changed(lane)

    def _forget(self, job: Job) -> None:
        if self._watcher is not None:
            self._watcher.forget(job)
        self._jobs.pop(job.id, None)
        left = self._pending_by_user.get(job.user_id, 0) - 1
        if left > 0:
            self._pending_by_user[job.user_id] = left
        else:
            self._pending_by_user.pop(job.user_id, None)

    def _announce_shift(self, lane: _ModelLane, removed_index: int) -> None:
        """Everyone from ``removed_index`` on moved up one; tell those on report points."""
        for position in report_points(len(lane.waiting)):
            if position - 1 >= removed_index:
                self._on_position(lane.waiting[position - 1], lane.place(position))

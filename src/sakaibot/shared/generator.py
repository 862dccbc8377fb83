"""A front end's generator in Redis mode: the job goes on the shared queue, the answer comes back.

With ``REDIS_URL`` set, a front end (``sakaibot run`` or ``sakaibot chat``) still
accepts commands, keeps its jobs durable and delivers the images itself (only it
holds the chat); the generation step is :class:`RemoteGenerator`. It adds the
request to the model's shared queue (bounded there for every front end
together), tells the status where the request stands, and waits, with a
deadline, for the answer that a worker sends back to this front end's answer
stream, returning the same ``(success, data, error)`` tuple as a local worker.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from asyncio import FIRST_COMPLETED
from collections.abc import Callable
from dataclasses import dataclass, field

from sakaibot.errors import (
    CancelledInQueue,
    QueueFull,
    RefusedByQueue,
    StoreUnavailable,
    TooManyPending,
    TransientWorkerError,
    WorkerTimeout,
    from_wire,
)
from sakaibot.generation import GeneratedImage, GenerationParams, GenerationResult
from sakaibot.models import ModelSpec
from sakaibot.shared.interfaces import Answer, FrontEndQueue
from sakaibot.shared.outage import OutageLog
from sakaibot.stopping import stop_tasks, wait_event

logger = logging.getLogger(__name__)

#: How often a front end looks up where its waiting requests stand.
POSITION_POLL_S = 2.0
#: How long an accepted request keeps trying to reach an unreachable shared queue.
ENQUEUE_PATIENCE_S = 60.0
#: The longest a request waits for its answer, queue and generation together.
ANSWER_DEADLINE_S = 3600.0
#: The longest a stop waits for the answer listener to see it.
STOP_WAIT_S = 5.0
#: Answers kept for jobs that have not asked for them (yet).
EARLY_ANSWERS_KEPT = 64
_RETRY_S = 1.0
#: How long one read of the answer stream waits for an answer.
_BLOCK_S = 1.0


def encode_params(params: GenerationParams) -> dict[str, object]:
    return dict(vars(params))


def decode_params(data: dict[str, object]) -> GenerationParams:
    return GenerationParams(**data)  # type: ignore[arg-type]


def result_from(answer: Answer, model: ModelSpec) -> GenerationResult:
    """A worker's answer as the generator boundary's tuple; a failure is rebuilt as
    the exception class it was over there (:func:`~sakaibot.errors.from_wire`)."""
    data = json.loads(answer.result_json)
    if data.get("ok") and answer.image is not None:
        image = GeneratedImage(
            data=answer.image,
            mime_type=str(data["mime_type"]),
            extension=str(data["extension"]),
            width=int(data["width"]),
            height=int(data["height"]),
        )
        return GenerationResult(True, image, None)
    error = from_wire(
        str(data.get("error_kind") or "generation"),
        str(data.get("error") or "The image worker failed. Please try again later."),
        str(data.get("detail") or "remote failure"),
        model=model.display_name,
        messages={str(k): str(v) for k, v in dict(data.get("messages") or {}).items()},
    )
    return GenerationResult(False, None, error)


@dataclass
class RemoteGenerator:
    """The generator boundary of a front end whose workers are elsewhere."""

    shared: FrontEndQueue
    frontend_id: str
    #: The bounds every front end shares: ``IMAGE_QUEUE_MAX`` and ``IMAGE_USER_MAX_PENDING``.
    max_waiting: int
    max_pending: int
    #: The user a job belongs to, for the per-user bound (default: one user per front end).
    user_of: Callable[[str], str | None] = lambda job_id: None
    #: Told the request's place in the shared queue while it waits (for status).
    on_position: Callable[[str, int], None] | None = None
    outage: OutageLog = field(default_factory=OutageLog)
    answer_deadline_s: float = ANSWER_DEADLINE_S
    position_poll_s: float = POSITION_POLL_S
    stop_wait_s: float = STOP_WAIT_S
    _waiting: dict[str, asyncio.Future[Answer]] = field(default_factory=dict)
    #: Answers read before their job asked (after a restart, recovery asks later).
    _early: dict[str, Answer] = field(default_factory=dict)
    _listener: asyncio.Task[None] | None = None
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    #: Done once :meth:`halt` is called: raced against every wait for an answer.
    _halted: asyncio.Future[None] | None = None

    def start(self) -> None:
        self._stop.clear()
        self._halted = asyncio.get_running_loop().create_future()
        self._listener = asyncio.create_task(self._listen(), name="remote-answers")

    def halt(self) -> None:
        """The front end is stopping: every wait here ends now, without a cancel.

        A request waiting for its answer (or to be handed over) is abandoned as
        if cancelled: it stays unfinished in the store and runs after the next
        start. Its job stays in the shared queue, so the answer is read then.
        Nothing relies on a cancel being seen (one can be lost on Python 3.11).
        """
        self._stop.set()
        if self._halted is not None and not self._halted.done():
            self._halted.set_result(None)

    async def aclose(self) -> None:
        """Stop listening; never waits longer than ``stop_wait_s``."""
        self.halt()
        listener, self._listener = self._listener, None
        if listener is not None:
            # The listener sees the stop between two reads; a read in flight ends
            # within its block time.
            await stop_tasks(
                [listener], timeout_s=self.stop_wait_s, told_s=_BLOCK_S + 0.5, what="shared queue"
            )

    async def cancel(self, model: str, job_id: str) -> bool:
        """Take back a request no worker has taken yet (``/image cancel``).

        The waiting ``generate`` call then returns a :class:`CancelledInQueue` failure.
        """
        waiter = self._waiting.get(job_id)
        if waiter is None or waiter.done():
            return False
        if not await self.shared.cancel(model, job_id, self.frontend_id):
            return False  # a worker has it already
        cancelled = CancelledInQueue("cancelled while waiting in the shared queue")
        answer = {"ok": False, "error_kind": cancelled.kind, "error": cancelled.user_message}
        if not waiter.done():
            waiter.set_result(Answer("", job_id, json.dumps(answer), None))
        return True

    async def generate(self, model: ModelSpec, params: GenerationParams) -> GenerationResult:
        job_id = params.request_id or secrets.token_hex(8)
        early = self._early.pop(job_id, None)
        if early is not None:  # answered before this front end restarted
            await self._ack(early)
            return result_from(early, model)
        answer: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        self._waiting[job_id] = answer
        payload = json.dumps(
            {"job": job_id, "frontend": self.frontend_id, "params": encode_params(params)}
        )
        try:
            async with asyncio.timeout(self.answer_deadline_s):
                place = await self._enqueue(model, job_id, payload)
                received = await self._await_answer(model, job_id, payload, place, answer)
        except (QueueFull, TooManyPending) as refusal:
            return GenerationResult(False, None, RefusedByQueue(refusal, model=model.display_name))
        except StoreUnavailable as exc:
            error = TransientWorkerError(f"shared queue: {exc}", model=model.display_name)
            return GenerationResult(False, None, error)
        except TimeoutError:
            await self._give_up(model, job_id)
            error = WorkerTimeout(
                f"no answer from the shared queue in {self.answer_deadline_s:g} s",
                model=model.display_name,
            )
            return GenerationResult(False, None, error)
        finally:
            self._waiting.pop(job_id, None)
        return result_from(received, model)

    async def _give_up(self, model: ModelSpec, job_id: str) -> None:
        # Out of the queue if it still waits; a late answer finds no waiter and is dropped.
        try:
            async with asyncio.timeout(self.stop_wait_s):
                await self.shared.cancel(model.name, job_id, self.frontend_id)
        except (StoreUnavailable, TimeoutError) as exc:
            logger.warning("could not take back %s after its deadline: %s", job_id, exc)

    async def _enqueue(self, model: ModelSpec, job_id: str, payload: str) -> int:
        """Hand the request over, riding out a short Redis outage.

        The job was already accepted and announced, so a passing outage must
        not fail it: the hand-over is tried again for up to ENQUEUE_PATIENCE_S.
        A refusal by the shared bounds (:class:`QueueFull`, :class:`TooManyPending`)
        is final.
        """
        waited_s = 0.0
        while True:
            try:
                return await self.shared.enqueue(
                    model.name,
                    job_id,
                    payload,
                    user_id=self.user_of(job_id) or self.frontend_id,
                    frontend_id=self.frontend_id,
                    max_waiting=self.max_waiting,
                    max_pending=self.max_pending,
                    model_label=model.display_name,
                )
            except StoreUnavailable:
                if waited_s >= ENQUEUE_PATIENCE_S:
                    raise
                self.outage.warn("shared queue unreachable; handing %s over again", job_id)
                if await wait_event(self._stop, _RETRY_S):
                    raise asyncio.CancelledError from None  # stopping: handed over after restart
                waited_s += _RETRY_S

    async def _await_answer(
        self,
        model: ModelSpec,
        job_id: str,
        payload: str,
        place: int,
        answer: asyncio.Future[Answer],
    ) -> Answer:
        """Wait for the answer, telling the status where the request stands meanwhile.

        Other front ends share the queue, so its positions are looked up (every
        ``position_poll_s``), not computed here. The job's record stays in
        Redis until this front end has its answer, so a job Redis does not know
        is lost (Redis restarted empty), never merely answered: it is asked again.
        """
        shown: int | None = None
        while True:
            if self.on_position is not None and place != shown:
                self.on_position(job_id, place)  # 0: a worker has it
                shown = place
            ends: set[asyncio.Future[Answer] | asyncio.Future[None]] = {answer}
            if self._halted is not None:
                ends.add(self._halted)
            await asyncio.wait(ends, timeout=self.position_poll_s, return_when=FIRST_COMPLETED)
            if answer.done():
                return answer.result()
            if self._stop.is_set():
                # Stopping: abandoned like a cancelled wait (a lost cancel must not
                # keep it here), and asked for again after the restart.
                raise asyncio.CancelledError
            try:
                found = await self.shared.position(model.name, job_id)
            except StoreUnavailable:
                continue
            if answer.done():
                return answer.result()  # it came while the position was looked up
            if found is None:
                logger.warning("request %s was lost by the shared queue; asking again", job_id)
                place = await self._enqueue(model, job_id, payload)
            else:
                place = found

    async def _listen(self) -> None:
        try:
            for received in await self.shared.unacked_answers(self.frontend_id):
                await self._settle(received)
        except StoreUnavailable as exc:
            self.outage.warn("shared queue unreachable; retrying: %s", exc)
        while not self._stop.is_set():
            try:
                for received in await self.shared.next_answers(self.frontend_id, block_s=_BLOCK_S):
                    await self._settle(received)
            except StoreUnavailable as exc:
                self.outage.warn("shared queue unreachable; retrying: %s", exc)
                await wait_event(self._stop, _RETRY_S)
            except Exception:
                # The one reader of every answer: if it died, every request of
                # this front end would wait out its deadline. Logged, and on.
                logger.exception("reading the shared queue's answers failed; retrying")
                await wait_event(self._stop, _RETRY_S)

    async def _settle(self, received: Answer) -> None:
        waiter = self._waiting.get(received.job_id)
        if waiter is None:
            # Not asked for (yet): after a restart, recovery asks for it later.
            self._early[received.job_id] = received
            if len(self._early) > EARLY_ANSWERS_KEPT:
                # The oldest is for a job nobody waits for any more (cancelled while running).
                await self._ack(self._early.pop(next(iter(self._early))))
            return
        if not waiter.done():
            waiter.set_result(received)
        await self._ack(received)

    async def _ack(self, received: Answer) -> None:
        try:
            await self.shared.ack_answer(self.frontend_id, received)
        except StoreUnavailable as exc:
            # Read again at the next start and dropped then: nobody waits for it.
            self.outage.warn("could not acknowledge the answer to %s: %s", received.job_id, exc)

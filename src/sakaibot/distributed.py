"""Generation shared through Redis: one FIFO per model for every front end and worker.

With ``REDIS_URL`` set, a front end (``sakaibot run`` or ``sakaibot chat``) still
accepts commands, keeps its jobs durable and delivers the images itself (only it
holds the chat), but the generation step goes through a shared queue:

- :class:`RemoteGenerator` is the front end's generator boundary. It puts the
  request on the model's shared FIFO and waits for the result that comes back
  to this front end, returning the same ``(success, data, error)`` tuple.
- :class:`GenerationWorker` (``sakaibot worker``, on any machine) claims
  requests in FIFO order under a lease, generates, and sends the result back
  to the front end that asked. A worker that dies loses nothing: its lease
  runs out and another worker takes the request again.

This module knows nothing of Redis itself; :mod:`sakaibot.redis_backend` is the
adapter behind the :class:`SharedQueue` protocol.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from sakaibot.errors import (
    GenerationError,
    JobCancelled,
    StoreUnavailable,
    TransientWorkerError,
)
from sakaibot.generation import (
    GeneratedImage,
    GenerationParams,
    GenerationResult,
    ImageGenerator,
)
from sakaibot.limits import Denial, RateWindow
from sakaibot.models import ModelRegistry, ModelSpec

logger = logging.getLogger(__name__)

#: How long a claimed request is a worker's before another may take it.
DEFAULT_LEASE_S = 120.0
#: How often a front end looks up where its waiting requests stand.
POSITION_POLL_S = 2.0
#: How long an accepted request keeps trying to reach an unreachable shared queue.
ENQUEUE_PATIENCE_S = 60.0
_RETRY_S = 1.0
#: How often an idle worker looks for new requests (and reaps expired leases).
_IDLE_POLL_S = 0.2


class OutageLog:
    """Warnings that the shared queue is unreachable, at most one per ``interval_s``.

    During an outage every lane, listener and waiting request retries on its
    own; each warning would otherwise be logged by each of them, many times a
    second. The ones held back are counted in the next warning that goes out.
    One is shared by everything of a process (front end and local worker).
    """

    def __init__(
        self, clock: Callable[[], float] = time.monotonic, *, interval_s: float = 1.0
    ) -> None:
        self._clock = clock
        self._interval_s = interval_s
        self._last_s: float | None = None
        self._held_back = 0

    def warn(self, message: str, *args: object) -> None:
        now_s = self._clock()
        if self._last_s is not None and now_s - self._last_s < self._interval_s:
            self._held_back += 1
            return
        self._last_s = now_s
        if self._held_back:
            message += " (and %d more such warnings)"
            args = (*args, self._held_back)
            self._held_back = 0
        logger.warning(message, *args)


class SharedLimits(Protocol):
    """Rate windows kept where every front end sees them."""

    async def admit(
        self, user_id: str, windows: list[RateWindow], now_s: float
    ) -> Denial | float: ...

    async def refund(self, user_id: str, stamp: float) -> bool: ...


class SharedAllowance:
    """The :class:`~sakaibot.limits.Allowance` of front ends that share their limits."""

    def __init__(
        self, shared: SharedLimits, windows: list[RateWindow], clock: Callable[[], float]
    ) -> None:
        self._shared = shared
        self._windows = windows
        self._clock = clock
        #: Refunds on their way to Redis, per key.
        self._refunding: dict[str, set[asyncio.Task[bool]]] = {}

    async def admit(self, key: str) -> Denial | float:
        # A slot this front end gave back must be back before the next request
        # of the same user is counted.
        pending = self._refunding.get(key)
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
        return await self._shared.admit(key, self._windows, self._clock())

    def refund(self, key: str, stamp: float) -> None:
        task = asyncio.get_running_loop().create_task(self._shared.refund(key, stamp))
        pending = self._refunding.setdefault(key, set())
        pending.add(task)

        def done(finished: asyncio.Task[bool]) -> None:
            pending.discard(finished)
            if not pending:
                self._refunding.pop(key, None)
            _log_failure(finished)

        task.add_done_callback(done)


class SharedQueue(Protocol):
    """What the shared queue offers (implemented on Redis)."""

    async def enqueue(
        self,
        model: str,
        job_id: str,
        payload: str,
        *,
        user_id: str,
        max_waiting: int,
        max_pending: int,
    ) -> int: ...

    async def position(self, model: str, job_id: str) -> int | None: ...

    async def known(self, job_id: str) -> bool: ...

    async def cancel(self, model: str, job_id: str, user_id: str) -> bool: ...

    async def claim(
        self, model: str, worker_id: str, lease_s: float, now_s: float
    ) -> tuple[str, str] | None: ...

    async def renew(
        self, model: str, job_id: str, worker_id: str, lease_s: float, now_s: float
    ) -> bool: ...

    async def complete(self, model: str, job_id: str, worker_id: str, user_id: str) -> bool: ...

    async def reap(self, model: str, now_s: float) -> list[str]: ...

    async def publish_result(
        self, frontend_id: str, job_id: str, result_json: str, image: bytes | None, ttl_s: float
    ) -> None: ...

    async def next_result(
        self, frontend_id: str, timeout_s: float
    ) -> tuple[str, str, bytes | None] | None: ...

    async def ack_result(self, frontend_id: str, job_id: str) -> None: ...

    async def unacked_results(self, frontend_id: str) -> list[tuple[str, str, bytes | None]]: ...


def _encode_params(params: GenerationParams) -> dict[str, object]:
    return dict(vars(params))


def _decode_params(data: dict[str, object]) -> GenerationParams:
    return GenerationParams(**data)  # type: ignore[arg-type]


def _error_from(data: dict[str, object], model: str) -> GenerationError:
    """A worker's error, rebuilt with the same user message it had there."""
    kind = str(data.get("error_kind") or "generation")
    message = str(data.get("error") or "The image worker failed.")
    return RemoteGenerationError(message, kind=kind, model=model)


class RemoteGenerationError(GenerationError):
    """An error that happened in a worker process, carried back as text and kind."""

    def __init__(self, user_text: str, *, kind: str, model: str) -> None:
        super().__init__(f"remote: {kind}", model=model)
        self._user_text = user_text
        self.kind = kind

    @property
    def user_message(self) -> str:
        return self._user_text


@dataclass
class RemoteGenerator:
    """The generator boundary of a front end whose workers are elsewhere."""

    shared: SharedQueue
    frontend_id: str
    max_waiting: int
    max_pending: int
    result_ttl_s: float = 3600.0
    #: Told the request's place in the shared queue while it waits (for status).
    on_position: Callable[[str, int], None] | None = None
    outage: OutageLog = field(default_factory=OutageLog)
    _waiting: dict[str, asyncio.Future[tuple[str, bytes | None]]] = field(default_factory=dict)
    _listener: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._listener = asyncio.create_task(self._listen(), name="remote-results")

    async def cancel(self, model: str, job_id: str) -> bool:
        """Take back a request still waiting in the shared queue (``/image cancel``).

        The waiting ``generate`` call then returns a ``cancelled`` failure.
        """
        waiter = self._waiting.get(job_id)
        if waiter is None or waiter.done():
            return False
        if not await self.shared.cancel(model, job_id, self.frontend_id):
            return False  # a worker has it already
        cancelled = JobCancelled("cancelled while waiting in the shared queue")
        answer = {"ok": False, "error_kind": cancelled.kind, "error": cancelled.user_message}
        waiter.set_result((json.dumps(answer), None))
        return True

    async def aclose(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener

    async def generate(self, model: ModelSpec, params: GenerationParams) -> GenerationResult:
        job_id = params.request_id or secrets.token_hex(8)
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[tuple[str, bytes | None]] = loop.create_future()
        self._waiting[job_id] = answer
        payload = json.dumps(
            {"job": job_id, "frontend": self.frontend_id, "params": _encode_params(params)}
        )
        try:
            place = await self._enqueue(model, job_id, payload)
            result_json, image_bytes = await self._await_answer(
                model, job_id, payload, place, answer
            )
        except StoreUnavailable as exc:
            return GenerationResult(
                False, None, TransientWorkerError(f"shared queue: {exc}", model=model.display_name)
            )
        finally:
            self._waiting.pop(job_id, None)
        data = json.loads(result_json)
        if not data.get("ok") or image_bytes is None:
            return GenerationResult(False, None, _error_from(data, model.display_name))
        image = GeneratedImage(
            data=image_bytes,
            mime_type=str(data["mime_type"]),
            extension=str(data["extension"]),
            width=int(data["width"]),
            height=int(data["height"]),
        )
        return GenerationResult(True, image, None)

    async def _enqueue(self, model: ModelSpec, job_id: str, payload: str) -> int:
        """Hand the request over, riding out a short Redis outage.

        The job was already accepted and announced, so a passing outage must
        not fail it: the hand-over is tried again for up to ENQUEUE_PATIENCE_S.
        """
        waited_s = 0.0
        while True:
            try:
                return await self.shared.enqueue(
                    model.name,
                    job_id,
                    payload,
                    user_id=self.frontend_id,
                    max_waiting=self.max_waiting,
                    max_pending=self.max_pending,
                )
            except ValueError:
                # Already running (asked before this front end restarted): its answer comes.
                return 0
            except StoreUnavailable:
                if waited_s >= ENQUEUE_PATIENCE_S:
                    raise
                self.outage.warn("shared queue unreachable; handing %s over again", job_id)
                await asyncio.sleep(_RETRY_S)
                waited_s += _RETRY_S

    async def _await_answer(
        self,
        model: ModelSpec,
        job_id: str,
        payload: str,
        place: int,
        answer: asyncio.Future[tuple[str, bytes | None]],
    ) -> tuple[str, bytes | None]:
        """Wait for the answer, telling the status where the request stands meanwhile.

        Other front ends share the queue, so its positions are looked up
        (every :data:`POSITION_POLL_S`), not computed here.
        """
        shown: int | None = None
        while True:
            if self.on_position is not None and place != shown:
                self.on_position(job_id, place)  # 0: a worker has it
                shown = place
            with contextlib.suppress(TimeoutError):
                return await asyncio.wait_for(asyncio.shield(answer), timeout=POSITION_POLL_S)
            try:
                place = await self.shared.position(model.name, job_id) or 0
                if place == 0 and not answer.done() and not await self.shared.known(job_id):
                    # Neither waiting, running nor answered: the shared queue lost it
                    # (Redis restarted without its data). Ask again; nothing is lost.
                    logger.warning("request %s was lost by the shared queue; asking again", job_id)
                    place = await self._enqueue(model, job_id, payload)
            except StoreUnavailable:
                continue

    async def _listen(self) -> None:
        # Results received before a crash and not yet acknowledged come first.
        for job_id, result_json, image in await self.shared.unacked_results(self.frontend_id):
            self._settle(job_id, result_json, image)
        while True:
            try:
                received = await self.shared.next_result(self.frontend_id, timeout_s=1.0)
            except StoreUnavailable as exc:
                self.outage.warn("shared queue unreachable; retrying: %s", exc)
                await asyncio.sleep(1.0)
                continue
            if received is not None:
                self._settle(*received)

    def _settle(self, job_id: str, result_json: str, image: bytes | None) -> None:
        waiter = self._waiting.get(job_id)
        if waiter is not None and not waiter.done():
            waiter.set_result((result_json, image))
        # Acknowledged once handed over; a duplicate (a reaped job finished
        # twice) finds no waiter and is simply dropped.
        task = asyncio.get_running_loop().create_task(
            self.shared.ack_result(self.frontend_id, job_id)
        )
        task.add_done_callback(_log_failure)


@dataclass
class GenerationWorker:
    """Claims requests from the shared FIFOs and generates them."""

    shared: SharedQueue
    registry: ModelRegistry
    generator: ImageGenerator
    worker_id: str = field(default_factory=lambda: f"worker-{secrets.token_hex(4)}")
    lease_s: float = DEFAULT_LEASE_S
    result_ttl_s: float = 3600.0
    clock: Callable[[], float] = time.time
    done: int = 0
    outage: OutageLog = field(default_factory=OutageLog)

    async def run(self, stop: asyncio.Event) -> None:
        """Work every configured model until ``stop`` is set (then finish the current job)."""
        lanes = [
            asyncio.create_task(self._lane(model, stop), name=f"worker-{model.name}-{n}")
            for model in self.registry
            for n in range(model.concurrency)
        ]
        await asyncio.gather(*lanes)

    async def _lane(self, model: ModelSpec, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.shared.reap(model.name, self.clock())
                claimed = await self.shared.claim(
                    model.name, self.worker_id, self.lease_s, self.clock()
                )
            except StoreUnavailable as exc:
                self.outage.warn("shared queue unreachable; retrying: %s", exc)
                claimed = None
            if claimed is None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=_IDLE_POLL_S)
                continue
            try:
                await self._work(model, *claimed)
            except StoreUnavailable as exc:
                # The answer may not have gone out: the lease runs out and the
                # request is generated again, by this worker or another.
                self.outage.warn("could not hand back %s: %s", claimed[0], exc)

    async def _work(self, model: ModelSpec, job_id: str, payload: str) -> None:
        request = json.loads(payload)
        params = _decode_params(dict(request["params"]))
        renewing = asyncio.create_task(self._keep_lease(model, job_id))
        try:
            result = await self.generator.generate(model, params)
        finally:
            renewing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewing
        if result.success and result.data is not None:
            image = result.data
            answer: dict[str, object] = {
                "ok": True,
                "mime_type": image.mime_type,
                "extension": image.extension,
                "width": image.width,
                "height": image.height,
            }
            data: bytes | None = image.data
        else:
            error = result.error
            answer = {
                "ok": False,
                "error_kind": error.kind if error else "generation",
                "error": error.user_message if error else "The image worker failed.",
            }
            data = None
        # Publish first, then complete: a crash in between means the request
        # runs again and the front end drops the second answer; the other
        # order could lose the answer.
        await self.shared.publish_result(
            str(request["frontend"]), job_id, json.dumps(answer), data, self.result_ttl_s
        )
        await self.shared.complete(model.name, job_id, self.worker_id, str(request["frontend"]))
        self.done += 1

    async def _keep_lease(self, model: ModelSpec, job_id: str) -> None:
        while True:
            await asyncio.sleep(self.lease_s / 3)
            try:
                await self.shared.renew(
                    model.name, job_id, self.worker_id, self.lease_s, self.clock()
                )
            except StoreUnavailable as exc:
                # Keep generating; if the lease runs out meanwhile, a second
                # worker may redo it and the front end keeps the first answer.
                self.outage.warn("could not renew the lease of %s: %s", job_id, exc)


def _log_failure(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.warning("could not acknowledge a result: %s", task.exception())

"""``sakaibot worker``: take jobs from the shared queues, generate, answer the front end.

Each configured model gets ``concurrency`` lanes. A lane takes the next job
(a dead worker's job first), keeps it alive while the image is made, and
answers the front end that asked. Only the job's current holder can answer:
a worker that fell silent so long that another took its job over finds its
late answer refused, so it can never overwrite the other's. A job given to
``max_deliveries`` workers without an answer (it stops each one) is set aside
and its user told, instead of going round for ever.

Nothing here waits without a deadline, and nothing awaits a task that may not
have seen its cancel: the keep-alive stops on an event and is waited for with
a timeout, so a stop never hangs.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from dataclasses import dataclass, field

from sakaibot.errors import JobSetAside, StoreUnavailable
from sakaibot.generation import GenerationResult, ImageGenerator
from sakaibot.i18n import Texts, every_language
from sakaibot.models import ModelRegistry, ModelSpec
from sakaibot.shared.generator import decode_params
from sakaibot.shared.interfaces import Taken, WorkerQueue
from sakaibot.shared.outage import OutageLog
from sakaibot.stopping import stop_tasks, wait_event

logger = logging.getLogger(__name__)

#: How long a worker may stay silent about a job before another worker takes it over.
DEFAULT_LEASE_S = 120.0
#: Workers a job may be given to; the one after that sets it aside.
DEFAULT_MAX_DELIVERIES = 3
#: How long an idle lane waits for a new job before it looks again (and at the stop).
_IDLE_BLOCK_S = 1.0
_RETRY_S = 1.0


@dataclass
class GenerationWorker:
    """Takes jobs from the shared queues and generates them."""

    shared: WorkerQueue
    registry: ModelRegistry
    generator: ImageGenerator
    worker_id: str = field(default_factory=lambda: f"worker-{secrets.token_hex(4)}")
    lease_s: float = DEFAULT_LEASE_S
    max_deliveries: int = DEFAULT_MAX_DELIVERIES
    done: int = 0
    outage: OutageLog = field(default_factory=OutageLog)
    #: A failure is told in every language: the front end picks its chat's.
    languages: tuple[Texts, ...] = field(default_factory=every_language)

    async def run(self, stop: asyncio.Event) -> None:
        """Work every configured model until ``stop`` is set (then finish the current jobs)."""
        lanes = [
            asyncio.create_task(self._lane(model, stop), name=f"worker-{model.name}-{n}")
            for model in self.registry
            for n in range(model.concurrency)
        ]
        try:
            await asyncio.gather(*lanes)
        finally:
            for lane in lanes:
                lane.cancel()

    async def _lane(self, model: ModelSpec, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                taken = await self.shared.take(
                    model.name, self.worker_id, lease_s=self.lease_s, block_s=_IDLE_BLOCK_S
                )
                if taken is None:
                    continue
                if taken.deliveries > self.max_deliveries:
                    await self._set_aside(model, taken)
                else:
                    await self._work(model, taken)
            except StoreUnavailable as exc:
                # An answer may not have gone out: the job stays pending and is
                # taken over once idle, by this worker or another.
                self.outage.warn("shared queue unreachable; retrying: %s", exc)
                await wait_event(stop, _RETRY_S)
            except Exception:
                # A lane that died would leave its model's jobs to the other
                # workers, or to nobody. The job in hand (if any) stays pending:
                # it is taken over after the lease, and set aside if it does this
                # to every worker it is given to.
                logger.exception("worker lane for %s failed; going on", model.name)
                await wait_event(stop, _RETRY_S)

    async def _work(self, model: ModelSpec, taken: Taken) -> None:
        request = json.loads(taken.payload)
        params = decode_params(dict(request["params"]))
        finished = asyncio.Event()
        keeper = asyncio.create_task(
            self._keep(model, taken, finished), name=f"keep-{taken.job_id}"
        )
        try:
            result = await self.generator.generate(model, params)
        finally:
            finished.set()
        # Answered before the keep-alive is waited for: a keep-alive stuck in a
        # Redis call must not hold the answer back.
        await self._answer(model, taken, str(request["frontend"]), result)
        await stop_tasks([keeper], timeout_s=self.lease_s, told_s=self.lease_s / 2, what="worker")

    async def _keep(self, model: ModelSpec, taken: Taken, finished: asyncio.Event) -> None:
        """Keep the job ours while it is generated, until ``finished`` is set."""
        while not await wait_event(finished, self.lease_s / 3):
            try:
                if not await self.shared.keep(model.name, self.worker_id, taken.entry_id):
                    # Taken over after a silence: this worker's answer will be refused.
                    logger.warning("job %s was taken over by another worker", taken.job_id)
                    return
            except StoreUnavailable as exc:
                self.outage.warn("could not keep %s: %s", taken.job_id, exc)

    async def _answer(
        self, model: ModelSpec, taken: Taken, frontend_id: str, result: GenerationResult
    ) -> None:
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
                "messages": {t.language: error.message_in(t) for t in self.languages}
                if error
                else {},
                "detail": str(error) if error else "no image",
            }
            data = None
        sent = await self.shared.answer(
            model.name, self.worker_id, taken, frontend_id, json.dumps(answer), data
        )
        if sent:
            self.done += 1
        else:
            logger.warning("job %s: answer refused, another worker holds it now", taken.job_id)

    async def _set_aside(self, model: ModelSpec, taken: Taken) -> None:
        """Answer a job that stopped worker after worker with a failure, instead of running it."""
        given = taken.deliveries - 1
        logger.error("job %s set aside: given to %d workers, none answered", taken.job_id, given)
        error = JobSetAside(given, model=model.display_name)
        frontend_id = str(json.loads(taken.payload)["frontend"])
        await self._answer(model, taken, frontend_id, GenerationResult(False, None, error))

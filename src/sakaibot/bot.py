"""The image feature as a front end sees it: one message in, replies and jobs out.

Order of admission for a generation request (only accepted requests count,
defect 5 of the original design): parse → rate-limit check → queue bounds →
record the rate-limit slot → queue the job → show its status.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from sakaibot.chat.port import ChatPort, IncomingMessage
from sakaibot.commands import (
    CancelCommand,
    HelpCommand,
    ImageRequest,
    ModelsCommand,
    RetryCommand,
    StatusCommand,
    is_generation_command,
    parse_command,
    usage_text,
)
from sakaibot.errors import (
    ChatError,
    JobCancelled,
    NothingToRetry,
    RateLimited,
    RequestRejected,
    StoreUnavailable,
    UnknownModel,
    format_wait,
)
from sakaibot.jobs import Job, JobIdFactory, job_record
from sakaibot.limits import SlidingWindowLimiter
from sakaibot.models import ModelRegistry
from sakaibot.pipeline import JobOutcome, OutcomeListener
from sakaibot.queues import JobQueues
from sakaibot.status import StatusScheduler, failed_text, show_place
from sakaibot.store import Store
from sakaibot.undelivered import UndeliveredImages

logger = logging.getLogger(__name__)

_EXAMPLE = "a red fox in the snow"


def _model_named_in(text: str) -> str | None:
    """The model a generation command names, as typed (lower-cased), for its result."""
    _, _, rest = text.partition("=")
    name = rest.partition("=")[0].strip().lower()
    return name or None


class ImageBot:
    """Turns chat messages into replies and queued jobs; knows no front end."""

    def __init__(
        self,
        *,
        registry: ModelRegistry,
        max_prompt_chars: int,
        limiter: SlidingWindowLimiter,
        queues: JobQueues,
        status: StatusScheduler,
        chat: ChatPort,
        clock: Callable[[], float],
        new_job_id: JobIdFactory,
        on_outcome: OutcomeListener,
        delivering: Callable[[], list[Job]] = list,
        undelivered: UndeliveredImages | None = None,
        send_image: Callable[..., Awaitable[int]] | None = None,
        store: Store,
    ) -> None:
        self._registry = registry
        self._max_prompt_chars = max_prompt_chars
        self._limiter = limiter
        self._queues = queues
        self._status = status
        self._chat = chat
        self._clock = clock
        self._new_job_id = new_job_id
        self._on_outcome = on_outcome
        self._delivering = delivering
        self._undelivered = undelivered
        self._send_image = send_image or chat.send_image
        self._store = store

    async def handle(self, message: IncomingMessage) -> bool:
        """Act on ``message``; ``False`` when it was not an ``/image`` command."""
        try:
            command = parse_command(
                message.text, self._registry, max_prompt_chars=self._max_prompt_chars
            )
            if command is None:
                return False
            if isinstance(command, ImageRequest):
                await self._accept(message, command)
            elif isinstance(command, HelpCommand):
                await self._reply(message, usage_text(self._registry))
            elif isinstance(command, ModelsCommand):
                await self._reply(message, self._models_text())
            elif isinstance(command, StatusCommand):
                await self._reply(message, self._status_text(message.user_id))
            elif isinstance(command, CancelCommand):
                await self._cancel(message, command)
            elif isinstance(command, RetryCommand):
                await self._retry(message, command)
        except (RequestRejected, StoreUnavailable) as rejection:
            await self._reject(message, rejection)
        return True

    # -- generation ------------------------------------------------------------

    async def _accept(self, message: IncomingMessage, request: ImageRequest) -> None:
        model = self._registry.get(request.model)
        if model is None:  # the parser only returns configured models
            raise UnknownModel(request.model, self._registry.names())
        job_id = await self._fresh_job_id()
        # From here to submit() nothing awaits: the checks and the counting
        # happen as one step, so bounds and order are exact.
        denial = self._limiter.check(message.user_id)
        if denial is not None:
            raise RateLimited(denial.retry_after_s, denial.window.limit, denial.window.window_s)
        self._queues.check_admission(model.name, message.user_id)
        job = Job(
            id=job_id,
            user_id=message.user_id,
            chat_id=message.chat_id,
            reply_to=message.message_id,
            request=request,
            model=model,
            created_at_s=self._clock(),
            persisted=asyncio.get_running_loop().create_future(),
        )
        job.limiter_stamp = self._limiter.record(message.user_id)
        self._queues.submit(job)
        assert job.persisted is not None
        # The job is written down before the user is told it is queued.
        try:
            await self._store.add_job(job_record(job))
        except StoreUnavailable as exc:
            logger.error("job %s could not be stored: %s", job.id, exc)
            job.persisted.set_result(False)
            self._limiter.refund(job.user_id, job.limiter_stamp)
            self._queues.withdraw(job)
            raise
        job.persisted.set_result(True)
        place = self._queues.place_of(job)
        if place is not None:
            show_place(self._status, job, place)
            logger.info("job %s queued: %s at position %d", job.id, model.name, place.position)

    async def _fresh_job_id(self) -> str:
        while True:
            job_id = self._new_job_id()
            if self._queues.is_free_id(job_id) and not await self._store.job_id_exists(job_id):
                return job_id

    async def _reject(
        self, message: IncomingMessage, rejection: RequestRejected | StoreUnavailable
    ) -> None:
        text = rejection.user_message
        reply = text if rejection.kind == "usage" else failed_text(text)
        await self._reply(message, reply)
        if is_generation_command(message.text):
            self._on_outcome(
                JobOutcome(
                    chat_id=message.chat_id,
                    reply_to=message.message_id,
                    user_id=message.user_id,
                    ok=False,
                    model=_model_named_in(message.text),
                    error_kind=rejection.kind,
                    error=text,
                )
            )

    # -- the other subcommands -------------------------------------------------

    async def _cancel(self, message: IncomingMessage, command: CancelCommand) -> None:
        job_id = command.job_id
        if job_id is None and message.reply_to_message_id is not None:
            # "/image cancel" sent as a reply to a status message cancels that job.
            job_id = self._status.key_for_message(message.chat_id, message.reply_to_message_id)
        job = self._queues.cancel(message.user_id, job_id)
        if job.limiter_stamp is not None:
            self._limiter.refund(job.user_id, job.limiter_stamp)
        self._status.finish(job.id)
        await self._reply(message, f"🚫 Cancelled job {job.id} ({job.model.display_name}).")
        cancelled = JobCancelled("cancelled by the user")
        self._on_outcome(
            JobOutcome.of_job(job, error_kind=cancelled.kind, error=cancelled.user_message)
        )

    async def _retry(self, message: IncomingMessage, command: RetryCommand) -> None:
        store = self._undelivered
        kept = store.take(command.job_id, message.user_id) if store is not None else None
        if store is None or kept is None:
            raise NothingToRetry(command.job_id)
        try:
            await self._send_image(kept.chat_id, kept.image, reply_to=kept.reply_to)
        except ChatError as exc:
            logger.warning("job %s: retry failed: %s", kept.job_id, exc)
            await self._reply(
                message,
                failed_text(
                    "It still could not be sent. It stays kept; "
                    f"try /image retry {kept.job_id} again later."
                ),
            )
            return
        store.forget(kept.job_id)

    def _models_text(self) -> str:
        loads = self._queues.loads()
        if not loads:
            return (
                "No image model is configured. The bot's owner should set "
                "FLUX_WORKER_URL or SDXL_WORKER_URL (see `sakaibot verify`)."
            )
        lines = ["Models:"]
        for load in loads:
            model = load.model
            queue = f"{load.waiting} waiting, {load.running} generating"
            eta = format_wait(load.eta_new_s)
            flags = " ".join(model.supported_flags())
            lines.append(
                f"• {model.name} ({model.display_name}): {queue}; "
                f"a new image would be ready in about {eta}. Flags: {flags}"
            )
        lines.append(f"Example: /image={loads[0].model.name}={_EXAMPLE}")
        return "\n".join(lines)

    def _status_text(self, user_id: str) -> str:
        jobs = self._queues.jobs_of(user_id)
        jobs += [(job, None) for job in self._delivering() if job.user_id == user_id]
        if not jobs:
            example = self._registry.names()[0] if self._registry else "flux"
            return (
                "You have no images waiting or in progress. "
                f"Start one with /image={example}={_EXAMPLE}"
            )
        lines = ["Your images:"]
        for job, place in jobs:
            if place is None:
                where = job.state.value
            else:
                where = f"position {place.position}, ready in about {format_wait(place.eta_s)}"
            lines.append(f"• {job.id} {job.model.name}: {where}")
        lines.append("Cancel a waiting one with /image cancel <id>.")
        return "\n".join(lines)

    async def _reply(self, message: IncomingMessage, text: str) -> None:
        try:
            await self._chat.send_text(message.chat_id, text, reply_to=message.message_id)
        except ChatError:
            logger.warning("chat %s: reply failed", message.chat_id, exc_info=True)

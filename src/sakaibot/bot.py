"""The image feature as a front end sees it: one message in, replies and jobs out.

Order of admission for a generation request (only accepted requests count,
defect 5 of the original design): parse → rate-limit check → queue bounds →
record the rate-limit slot → queue the job → show its status.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import replace

from sakaibot.breaker import Breakers, BreakerState
from sakaibot.cache import Cache
from sakaibot.captions import CaptionFacts, build_caption
from sakaibot.chat.port import ChatPort, IncomingMessage, OutgoingImage
from sakaibot.commands import (
    AgainCommand,
    CacheCommand,
    CancelCommand,
    HelpCommand,
    HistoryCommand,
    ImageRequest,
    ModelsCommand,
    ResendCommand,
    RetryCommand,
    StatsCommand,
    StatusCommand,
    WhoamiCommand,
    is_generation_command,
    parse_command,
    usage_text,
)
from sakaibot.errors import (
    ChatError,
    ImageGone,
    ModelUnavailable,
    NothingToCancel,
    NothingToRetry,
    OwnerOnly,
    RateLimited,
    RequestRejected,
    SlowDown,
    StoreUnavailable,
    UnknownJob,
    UnknownModel,
    format_wait,
    plural,
)
from sakaibot.jobs import Job, JobIdFactory, decode_request, job_record
from sakaibot.limits import Allowance, Denial, RejectionThrottle, RejectionVerdict
from sakaibot.models import ModelRegistry, ModelSpec
from sakaibot.pipeline import JobOutcome, JobPipeline, OutcomeListener, usable_fallback
from sakaibot.queues import JobQueues
from sakaibot.reports import compute_stats, format_history, format_stats
from sakaibot.shared.generator import RemoteGenerator
from sakaibot.status import StatusScheduler, failed_text, show_place
from sakaibot.store import JobRecord, JobStates, Store
from sakaibot.store.images import ImageFiles
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
        allowance: Allowance,
        queues: JobQueues,
        status: StatusScheduler,
        chat: ChatPort,
        clock: Callable[[], float],
        new_job_id: JobIdFactory,
        on_outcome: OutcomeListener,
        pipeline: JobPipeline,
        store: Store,
        undelivered: UndeliveredImages | None = None,
        cache: Cache | None = None,
        images: ImageFiles | None = None,
        wall_clock: Callable[[], float] = time.time,
        stats_days_default: int = 7,
        breakers: Breakers | None = None,
        remote: RemoteGenerator | None = None,
        rejections: RejectionThrottle | None = None,
    ) -> None:
        self._registry = registry
        self._max_prompt_chars = max_prompt_chars
        self._allowance = allowance
        self._queues = queues
        self._status = status
        self._chat = chat
        self._clock = clock
        self._new_job_id = new_job_id
        self._on_outcome = on_outcome
        self._pipeline = pipeline
        self._store = store
        self._undelivered = undelivered
        self._cache = cache
        self._images = images
        self._wall_clock = wall_clock
        self._stats_days_default = stats_days_default
        self._breakers = breakers
        #: The shared queue's generator, in Redis mode (for cancelling handed-over jobs).
        self._remote = remote
        #: How many refusals a user hears before silence; ``None`` answers every one.
        self._rejections = rejections

    async def handle(self, message: IncomingMessage) -> bool:
        """Act on ``message``; ``False`` when it was not an ``/image`` command."""
        # Every reply and job of this message goes to its chat: teach the chat how.
        self._chat.remember_chat(message.chat_id, message.chat_address)
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
            elif isinstance(command, HistoryCommand):
                await self._history(message, command)
            elif isinstance(command, AgainCommand):
                await self._again(message, command)
            elif isinstance(command, ResendCommand):
                await self._resend(message, command)
            elif isinstance(command, StatsCommand):
                await self._stats(message, command)
            elif isinstance(command, CacheCommand):
                await self._cache_command(message, command)
            elif isinstance(command, WhoamiCommand):
                await self._whoami(message)
        except (RequestRejected, StoreUnavailable) as rejection:
            await self._reject(message, rejection)
        return True

    # -- generation ------------------------------------------------------------

    async def _accept(self, message: IncomingMessage, request: ImageRequest) -> None:
        model = self._registry.get(request.model)
        if model is None:  # the parser only returns configured models
            raise UnknownModel(request.model, self._registry.names())
        job_id = await self._fresh_job_id()
        # A stored result skips the queue altogether: no worker is needed.
        hit = await self._cache.lookup(model, request) if self._cache is not None else None
        admitted = await self._allowance.admit(message.user_id)
        if isinstance(admitted, Denial):
            raise RateLimited(
                admitted.retry_after_s, admitted.window.limit, admitted.window.window_s
            )
        # From here to submit() nothing awaits: the checks and the queueing
        # happen as one step, so bounds and order are exact. A request refused
        # here gives its counted slot straight back (only accepted ones count).
        if hit is None:
            try:
                self._check_breaker(model, request)
                self._queues.check_admission(model.name, message.user_id)
            except RequestRejected:
                self._allowance.refund(message.user_id, admitted)
                raise
        job = Job(
            id=job_id,
            user_id=message.user_id,
            chat_id=message.chat_id,
            reply_to=message.message_id,
            request=request,
            model=model,
            created_at_s=self._clock(),
            persisted=asyncio.get_running_loop().create_future(),
            chat_address=message.chat_address,
        )
        job.limiter_stamp = admitted
        if hit is None:
            self._queues.submit(job)
        assert job.persisted is not None
        # The job is written down before the user is told it is queued.
        try:
            await self._store.add_job(job_record(job))
        except StoreUnavailable as exc:
            logger.error("job %s could not be stored: %s", job.id, exc)
            job.persisted.set_result(False)
            self._allowance.refund(job.user_id, admitted)
            if hit is None:
                self._queues.withdraw(job)
            raise
        job.persisted.set_result(True)
        self._queues.stored(job)
        if hit is not None:
            logger.info("job %s: answered from the cache", job.id)
            await self._pipeline.deliver_cached(job, hit)
            return
        place = self._queues.place_of(job)
        if place is not None:
            show_place(self._status, job, place)
            logger.info("job %s queued: %s at position %d", job.id, model.name, place.position)

    def _check_breaker(self, model: ModelSpec, request: ImageRequest) -> None:
        """While a model is paused, new requests hear so at once (unless a fallback takes them)."""
        if self._breakers is None:
            return
        breaker = self._breakers.get(model.name)
        if breaker.state is not BreakerState.OPEN:
            return
        fallback = usable_fallback(model, request.options, self._registry)
        if fallback is not None and self._breakers.get(fallback.name).state is BreakerState.CLOSED:
            return  # it will be made by the fallback
        # A configured fallback this request's flags keep out is still worth naming.
        other = self._registry.get(model.fallback) if model.fallback else None
        suggestion = (
            other.display_name
            if other is not None and self._breakers.get(other.name).state is BreakerState.CLOSED
            else None
        )
        raise ModelUnavailable(model.display_name, breaker.retry_after_s(), suggestion)

    async def _fresh_job_id(self) -> str:
        while True:
            job_id = self._new_job_id()
            if self._queues.is_free_id(job_id) and not await self._store.job_id_exists(job_id):
                return job_id

    async def _reject(
        self, message: IncomingMessage, rejection: RequestRejected | StoreUnavailable
    ) -> None:
        text = rejection.user_message
        verdict = RejectionVerdict.REPLY
        if self._rejections is not None and not message.from_owner:
            verdict = self._rejections.verdict(message.user_id)
        if verdict is RejectionVerdict.REPLY:
            await self._reply(message, text if rejection.kind == "usage" else failed_text(text))
        elif verdict is RejectionVerdict.SLOW_DOWN:
            assert self._rejections is not None
            silent_for_s = self._rejections.policy.window_s
            logger.info(
                "user %s keeps sending refused commands: not answered for %.0f s",
                message.user_id,
                silent_for_s,
            )
            await self._reply(message, f"✋ {SlowDown(silent_for_s).user_message}")
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
        try:
            job = self._queues.cancel(message.user_id, job_id)
        except NothingToCancel:
            # Not waiting here: it may have started; the pipeline ends it.
            stopped = await self._cancel_started(message.user_id, job_id)
            if stopped is None:
                raise
            await self._reply(
                message, f"🚫 Cancelled job {stopped.id} ({stopped.model.display_name})."
            )
            return
        await self._pipeline.end_cancelled(job)
        await self._reply(message, f"🚫 Cancelled job {job.id} ({job.model.display_name}).")

    async def _cancel_started(self, user_id: str, job_id: str | None) -> Job | None:
        """Stop the user's started job ``job_id`` (or newest one) unless it is being sent."""
        started = [
            job
            for job, place in self._queues.jobs_of(user_id)
            if place is None and not job.state.finished
        ]
        if job_id is not None:
            started = [job for job in started if job.id == job_id]
        for job in reversed(started):  # the newest first, as for waiting jobs
            # With a shared queue, a job this front end handed over may still be
            # waiting there: taken back, its generation returns "cancelled".
            if self._remote is not None and await self._remote.cancel(job.model.name, job.id):
                return job
            # Otherwise stop waiting for it; a worker's late answer is dropped.
            if await self._pipeline.cancel_running(job):
                return job
        return None

    async def _retry(self, message: IncomingMessage, command: RetryCommand) -> None:
        store = self._undelivered
        kept = None
        if store is not None:
            kept = await asyncio.to_thread(store.take, command.job_id, message.user_id)
        if store is None or kept is None:
            raise NothingToRetry(command.job_id)
        record = await self._record_or_none(kept.job_id)
        if record is not None:
            # The image may belong to another chat than the one the retry came from.
            self._chat.remember_chat(record.chat_id, record.chat_address)
        try:
            message_id = await self._pipeline.send_image(
                kept.chat_id, kept.image, reply_to=kept.reply_to
            )
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
        await asyncio.to_thread(store.forget, kept.job_id)
        if record is not None:
            # History and statistics count the job as delivered from now on.
            await self._note_retried(record, message_id)

    async def _record_or_none(self, job_id: str) -> JobRecord | None:
        """The job's record, or ``None`` when the store cannot say (the image matters more)."""
        try:
            return await self._store.get_job(job_id)
        except StoreUnavailable as exc:
            logger.error("job %s: could not read its record: %s", job_id, exc)
            return None

    async def _note_retried(self, record: JobRecord, message_id: int) -> None:
        try:
            await self._store.update_job(
                record.id,
                state=JobStates.DONE,
                delivered_message_id=message_id,
                finished_at_s=self._wall_clock(),
            )
        except StoreUnavailable as exc:
            logger.error("job %s: delivered by retry but not written down: %s", record.id, exc)

    async def _history(self, message: IncomingMessage, command: HistoryCommand) -> None:
        records = await self._store.history(message.user_id, command.limit)
        await self._reply(message, format_history(records, now_s=self._wall_clock()))

    async def _own_job(self, message: IncomingMessage, job_id: str) -> JobRecord:
        record = await self._store.get_job(job_id)
        if record is None or record.user_id != message.user_id:
            raise UnknownJob(job_id)
        return record

    async def _again(self, message: IncomingMessage, command: AgainCommand) -> None:
        record = await self._own_job(message, command.job_id)
        request = decode_request(record.request_json)
        model = self._registry.get(record.model)
        if model is None:
            raise UnknownModel(record.model, self._registry.names())
        # The same prompt with a new seed, so the result is a new picture.
        options = replace(
            request.options,
            seed=secrets.randbelow(2**32) if model.supports("seed") else None,
            fresh=True,
        )
        await self._accept(message, replace(request, options=options))

    async def _resend(self, message: IncomingMessage, command: ResendCommand) -> None:
        record = await self._own_job(message, command.job_id)
        image = None
        if self._images is not None and record.image_hash and record.image_ext:
            image = await self._images.get(record.image_hash, record.image_ext)
        if image is None:
            raise ImageGone(command.job_id)
        model = self._registry.get(record.model)
        request = decode_request(record.request_json)
        caption = build_caption(
            CaptionFacts(
                model_label=model.display_name if model is not None else record.model,
                prompt_source=record.enhancer or "original prompt",
                prompt_used=record.prompt_used or record.prompt,
                options=request.options,
                elapsed_s=(record.finished_at_s or record.created_at_s) - record.created_at_s,
                seed=request.options.seed,
                job_id=record.id,
            )
        )
        outgoing = OutgoingImage(
            image=image,
            caption=caption,
            filename=f"sakaibot-{record.model}-{record.id}{image.extension}",
            as_file=request.options.as_file,
        )
        try:
            await self._pipeline.send_image(message.chat_id, outgoing, reply_to=message.message_id)
        except ChatError as exc:
            logger.warning("job %s: resend failed: %s", record.id, exc)
            await self._reply(message, failed_text(exc.user_message))

    async def _stats(self, message: IncomingMessage, command: StatsCommand) -> None:
        if not message.from_owner:
            raise OwnerOnly("/image stats")
        since_s = self._wall_clock() - command.days * 86_400
        records = await self._store.jobs_since(since_s)
        queue = [(load.model.name, load.waiting, load.running) for load in self._queues.loads()]
        stats = compute_stats(records, days=command.days, queue=queue)
        await self._reply(message, format_stats(stats))

    async def _cache_command(self, message: IncomingMessage, command: CacheCommand) -> None:
        if not message.from_owner:
            raise OwnerOnly("/image cache")
        if self._cache is None or not self._cache.enabled:
            await self._reply(message, "The result cache is turned off (CACHE_TTL_S=0).")
            return
        if command.clear:
            removed = await self._cache.clear()
            await self._reply(
                message, f"🧹 Cache cleared: {plural(removed, 'entry', 'entries')} removed."
            )
            return
        summary = await self._cache.summary()
        since_s = self._wall_clock() - self._stats_days_default * 86_400
        done = [r for r in await self._store.jobs_since(since_s) if r.state == JobStates.DONE]
        hits = sum(1 for r in done if r.cache_hit)
        rate = f"{100 * hits / len(done):.0f}%" if done else "no images yet"
        await self._reply(
            message,
            f"Result cache: {plural(summary.entries, 'entry', 'entries')}, "
            f"{summary.size_bytes / 1_000_000:.1f} MB of {summary.max_bytes / 1_000_000:.0f} MB, "
            f"each kept {format_wait(summary.ttl_s)}.\n"
            f"Hit rate over {self._stats_days_default} days: {rate} ({hits} of {len(done)}).\n"
            "Clear it with /image cache clear.",
        )

    async def _whoami(self, message: IncomingMessage) -> None:
        # Owner only: ids are not secret, but a bot should not hand them to strangers.
        if not message.from_owner:
            raise OwnerOnly("/image whoami")
        await self._reply(message, whoami_text(message.chat_id, message.user_id))

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
        jobs += [(job, None) for job in self._pipeline.delivering() if job.user_id == user_id]
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
        lines.append("Cancel one with /image cancel <id>.")
        return "\n".join(lines)

    async def _reply(self, message: IncomingMessage, text: str) -> None:
        try:
            await self._chat.send_text(message.chat_id, text, reply_to=message.message_id)
        except ChatError:
            logger.warning("chat %s: reply failed", message.chat_id, exc_info=True)


def whoami_text(chat_id: str, user_id: str) -> str:
    """The answer to ``/image whoami``: the ids to put in ALLOWED_CHAT_IDS / ALLOWED_USER_IDS."""
    return (
        f"This chat's id: {chat_id}\n"
        f"Your user id: {user_id}\n"
        f"To let everyone in this chat use the bot, add {chat_id} to ALLOWED_CHAT_IDS; "
        "to let one person use it in any chat, add their user id to ALLOWED_USER_IDS. "
        "Then restart SakaiBot."
    )

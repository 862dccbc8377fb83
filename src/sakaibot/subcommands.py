"""The ``/image`` subcommands other than a new image: one small handler per verb.

Each handler answers with the text to reply (or ``None`` when there is
nothing to say) and raises a :class:`~sakaibot.errors.RequestRejected` for a
refusal; :class:`~sakaibot.bot.ImageBot` sends either. Handlers are found
through a table keyed by the parsed command's type. Read-only verbs (help,
models, status, history) answer anyone; stats, cache and whoami only the owner;
cancel, retry, resend/file and again act on the sender's own jobs (named by id,
or, for again, file and resend, by replying to the image); set changes the
chat's default flags, for the owner and the users the owner named.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any, TypeVar

from sakaibot.admission import Admission
from sakaibot.cache import Cache
from sakaibot.captions import Caption, CaptionFacts, CaptionPart, build_caption
from sakaibot.chat.port import ChatPort, IncomingMessage, OutgoingImage
from sakaibot.commands import (
    DEFAULT_MAX_PER_REQUEST,
    EXAMPLE_PROMPT,
    AgainCommand,
    CacheCommand,
    CancelCommand,
    Command,
    DefaultsCommand,
    HelpCommand,
    HistoryCommand,
    ModelsCommand,
    ResendCommand,
    RetryCommand,
    StatsCommand,
    StatusCommand,
    WhoamiCommand,
    default_flag_text,
    per_request_text,
    usage_text,
)
from sakaibot.enhancer import ORIGINAL_PROMPT
from sakaibot.errors import (
    ChatError,
    DefaultsLocked,
    ImageGone,
    JobCancelled,
    NoImageReplied,
    NothingToCancel,
    NothingToRetry,
    OwnerOnly,
    StoreUnavailable,
    UnknownJob,
    UnknownModel,
    format_wait,
    plural,
)
from sakaibot.generation import GeneratedImage
from sakaibot.jobs import Job, decode_request
from sakaibot.models import ModelRegistry
from sakaibot.pipeline import JobPipeline, image_actions
from sakaibot.queues import JobQueues
from sakaibot.quota import DailyBudgets
from sakaibot.reports import DAY_S, compute_stats, format_history, format_stats
from sakaibot.shared.generator import RemoteGenerator
from sakaibot.status import (
    StatusScheduler,
    default_cleared_text,
    default_set_text,
    defaults_reset_text,
    defaults_text,
    failed_text,
)
from sakaibot.store import JobRecord, Store, StoredJobState
from sakaibot.store.images import ImageFiles
from sakaibot.undelivered import UndeliveredImages

logger = logging.getLogger(__name__)

_C = TypeVar("_C")
#: A subcommand handler: the message and its parsed command in, the reply out.
Handler = Callable[[IncomingMessage, Any], Awaitable[str | None]]


class Subcommands:
    """Every subcommand's handler, and the table that finds it."""

    def __init__(
        self,
        *,
        registry: ModelRegistry,
        chat: ChatPort,
        queues: JobQueues,
        status: StatusScheduler,
        pipeline: JobPipeline,
        admission: Admission,
        store: Store,
        cache: Cache,
        images: ImageFiles,
        undelivered: UndeliveredImages | None,
        remote: RemoteGenerator | None,
        wall_clock: Callable[[], float],
        stats_days_default: int,
        budgets: DailyBudgets | None = None,
        draw_chart: DrawChart | None = None,
        max_per_request: int = DEFAULT_MAX_PER_REQUEST,
    ) -> None:
        self._budgets = budgets
        #: Draws the owner's day chart as PNG bytes (``None``: text only).
        self._draw_chart = draw_chart
        self._registry = registry
        self._chat = chat
        self._queues = queues
        self._status = status
        self._pipeline = pipeline
        self._admission = admission
        self._store = store
        self._cache = cache
        self._images = images
        #: ``None`` when keeping undelivered images is turned off.
        self._undelivered = undelivered
        #: The shared queue's generator, in Redis mode (for cancelling handed-over jobs).
        self._remote = remote
        self._wall_clock = wall_clock
        self._stats_days_default = stats_days_default
        #: ``--n``: how many images one request may ask for.
        self._max_per_request = max_per_request
        self._verbs: dict[type, Handler] = {}
        self._verb(HelpCommand, self._help)
        self._verb(ModelsCommand, self._models)
        self._verb(StatusCommand, self._status_of)
        self._verb(HistoryCommand, self._history)
        self._verb(CancelCommand, self._cancel)
        self._verb(RetryCommand, self._retry)
        self._verb(AgainCommand, self._again)
        self._verb(ResendCommand, self._resend)
        self._verb(StatsCommand, self._stats)
        self._verb(CacheCommand, self._cache_command)
        self._verb(WhoamiCommand, self._whoami)
        self._verb(DefaultsCommand, self._defaults)

    def _verb(
        self, kind: type[_C], handler: Callable[[IncomingMessage, _C], Awaitable[str | None]]
    ) -> None:
        self._verbs[kind] = handler

    async def answer(self, message: IncomingMessage, command: Command) -> str | None:
        """Run ``command``'s handler; its reply text, if any."""
        return await self._verbs[type(command)](message, command)

    # -- read-only -------------------------------------------------------------

    async def _help(self, message: IncomingMessage, command: HelpCommand) -> str:
        return usage_text(self._registry, max_per_request=self._max_per_request)

    async def _models(self, message: IncomingMessage, command: ModelsCommand) -> str:
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
        lines.append(f"Example: /image={loads[0].model.name}={EXAMPLE_PROMPT}")
        lines.append(per_request_text(self._max_per_request))
        return "\n".join(lines)

    async def _status_of(self, message: IncomingMessage, command: StatusCommand) -> str:
        user_id = message.user_id
        jobs = self._queues.jobs_of(user_id)
        jobs += [(job, None) for job in self._pipeline.delivering() if job.user_id == user_id]
        if not jobs:
            example = self._registry.names()[0] if self._registry else "flux"
            return (
                "You have no images waiting or in progress. "
                f"Start one with /image={example}={EXAMPLE_PROMPT}"
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

    async def _history(self, message: IncomingMessage, command: HistoryCommand) -> str:
        records = await self._store.history(message.user_id, command.limit)
        return format_history(records, now_s=self._wall_clock())

    # -- the sender's own jobs -------------------------------------------------

    async def _cancel(self, message: IncomingMessage, command: CancelCommand) -> str:
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
            return f"🚫 Cancelled job {stopped.id} ({stopped.model.display_name})."
        await self._pipeline.finish(job, JobCancelled("cancelled by the user"))
        return f"🚫 Cancelled job {job.id} ({job.model.display_name})."

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

    async def _retry(self, message: IncomingMessage, command: RetryCommand) -> str | None:
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
            return failed_text(
                "It still could not be sent. It stays kept; "
                f"try /image retry {kept.job_id} again later."
            )
        await asyncio.to_thread(store.forget, kept.job_id)
        if record is not None:
            # History and statistics count the job as delivered from now on.
            await self._pipeline.note_delivered_late(record.id, message_id)
        return None

    async def _record_or_none(self, job_id: str) -> JobRecord | None:
        """The job's record, or ``None`` when the store cannot say (the image matters more)."""
        try:
            return await self._store.get_job(job_id)
        except StoreUnavailable as exc:
            logger.error("job %s: could not read its record: %s", job_id, exc)
            return None

    async def stored_job(self, job_id: str) -> JobRecord | None:
        """A job's record, whatever its state (a press on an old button names it)."""
        return await self._store.get_job(job_id)

    async def _own_job(self, message: IncomingMessage, job_id: str | None, verb: str) -> JobRecord:
        """The sender's job ``job_id``; with no id, the one whose image the message replies to."""
        if job_id is None:
            replied = message.reply_to_message_id
            record = None
            if replied is not None:
                record = await self._store.job_by_delivered_message(message.chat_id, replied)
            if record is None:
                raise NoImageReplied(verb)
            job_id = record.id
        else:
            record = await self._store.get_job(job_id)
        if record is None or record.user_id != message.user_id:
            raise UnknownJob(job_id)
        return record

    async def _again(self, message: IncomingMessage, command: AgainCommand) -> None:
        record = await self._own_job(message, command.job_id, "again")
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
        await self._admission.admit(message, replace(request, options=options))

    async def _resend(self, message: IncomingMessage, command: ResendCommand) -> str | None:
        verb = "file" if command.as_file else "resend"
        record = await self._own_job(message, command.job_id, verb)
        image = None
        if record.image_hash and record.image_ext:
            image = await self._images.get(record.image_hash, record.image_ext)
        if image is None:
            # Told, not made again: a new image is /image again's (and counts as one).
            raise ImageGone(record.id)
        model = self._registry.get(record.model)
        request = decode_request(record.request_json)
        caption = build_caption(
            CaptionFacts(
                model_label=model.display_name if model is not None else record.model,
                prompt_source=record.enhancer or ORIGINAL_PROMPT,
                prompt_used=record.prompt_used or record.prompt,
                options=request.options,
                elapsed_s=(record.finished_at_s or record.created_at_s) - record.created_at_s,
                seed=request.options.seed,
                job_id=record.id,
            )
        )
        as_file = command.as_file or request.options.as_file
        outgoing = OutgoingImage(
            image=image,
            caption=caption,
            filename=f"sakaibot-{record.model}-{record.id}{image.extension}",
            as_file=as_file,
            actions=image_actions(record.id, as_file=as_file),
        )
        try:
            await self._pipeline.send_image(message.chat_id, outgoing, reply_to=message.message_id)
        except ChatError as exc:
            logger.warning("job %s: resend failed: %s", record.id, exc)
            return failed_text(exc.user_message)
        return None

    # -- the chat's defaults -----------------------------------------------------

    async def _defaults(self, message: IncomingMessage, command: DefaultsCommand) -> str:
        chat_id = message.chat_id
        if command.flag is None and not command.reset:
            defaults = await self._store.chat_defaults(chat_id)
            skipped = {
                default_flag_text(name, value): self._models_without(name)
                for name, value in defaults.items()
            }
            return defaults_text(list(skipped), {f: m for f, m in skipped.items() if m})
        # Anyone let in only by the chat (ALLOWED_CHAT_IDS) may read them, not change them.
        if not (message.from_owner or message.from_named_user):
            raise DefaultsLocked()
        if command.reset:
            return defaults_reset_text(await self._store.clear_chat_defaults(chat_id))
        assert command.flag is not None
        await self._store.set_chat_default(chat_id, command.flag, command.value)
        if command.value is None:
            return default_cleared_text(command.flag)
        return default_set_text(
            default_flag_text(command.flag, command.value), self._models_without(command.flag)
        )

    def _models_without(self, flag: str) -> list[str]:
        """The configured models that do not take ``flag`` (its default skips them)."""
        return [spec.name for spec in self._registry if not spec.supports(flag)]

    # -- the owner's -----------------------------------------------------------

    async def _stats(self, message: IncomingMessage, command: StatsCommand) -> str:
        if not message.from_owner:
            raise OwnerOnly("/image stats")
        since_s = self._wall_clock() - command.days * DAY_S
        records = await self._store.jobs_since(since_s)
        queue = [(load.model.name, load.waiting, load.running) for load in self._queues.loads()]
        budgets = self._budgets.uses(self._registry.names()) if self._budgets is not None else []
        text = format_stats(compute_stats(records, days=command.days, queue=queue, budgets=budgets))
        if self._draw_chart is not None:
            await self._send_chart(message)
        return text

    async def _send_chart(self, message: IncomingMessage) -> None:
        """The last day as a picture, sent before the text; a chart that fails is only logged."""
        assert self._draw_chart is not None
        now_s = self._wall_clock()
        records = await self._store.jobs_since(now_s - DAY_S)
        try:
            png = await asyncio.to_thread(self._draw_chart, records, now_s)
        except Exception:
            logger.exception("stats: the chart could not be drawn")
            return
        width, height = png_size(png)
        outgoing = OutgoingImage(
            image=GeneratedImage(png, "image/png", ".png", width, height),
            caption=Caption((CaptionPart(CHART_CAPTION),)),
            filename="sakaibot-stats.png",
            as_file=False,
        )
        try:
            await self._pipeline.send_image(message.chat_id, outgoing, reply_to=message.message_id)
        except ChatError as exc:
            logger.warning("stats: the chart could not be sent: %s", exc)

    async def _cache_command(self, message: IncomingMessage, command: CacheCommand) -> str:
        if not message.from_owner:
            raise OwnerOnly("/image cache")
        if not self._cache.enabled:
            return "The result cache is turned off (CACHE_TTL_S=0)."
        if command.clear:
            removed = await self._cache.clear()
            return f"🧹 Cache cleared: {plural(removed, 'entry', 'entries')} removed."
        summary = await self._cache.summary()
        since_s = self._wall_clock() - self._stats_days_default * DAY_S
        done = [r for r in await self._store.jobs_since(since_s) if r.state == StoredJobState.DONE]
        hits = sum(1 for r in done if r.cache_hit)
        rate = f"{100 * hits / len(done):.0f}%" if done else "no images yet"
        return (
            f"Result cache: {plural(summary.entries, 'entry', 'entries')}, "
            f"{summary.size_bytes / 1_000_000:.1f} MB of {summary.max_bytes / 1_000_000:.0f} MB, "
            f"each kept {format_wait(summary.ttl_s)}.\n"
            f"Hit rate over {self._stats_days_default} days: {rate} ({hits} of {len(done)}).\n"
            "Clear it with /image cache clear."
        )

    async def _whoami(self, message: IncomingMessage, command: WhoamiCommand) -> str:
        # Owner only: ids are not secret, but a bot should not hand them to strangers.
        if not message.from_owner:
            raise OwnerOnly("/image whoami")
        return whoami_text(message.chat_id, message.user_id)


#: The words under the owner's stats chart.
CHART_CAPTION = "Images per hour and median wait over the last 24 hours"
#: Draws the day chart: the jobs of the last day and the time now in, PNG bytes out.
DrawChart = Callable[[list[JobRecord], float], bytes]


def png_size(png: bytes) -> tuple[int, int]:
    """Width and height from a PNG's header (its IHDR chunk)."""
    if png[:8] != b"\x89PNG\r\n\x1a\n" or len(png) < 24:
        raise ValueError("not a PNG")
    return int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")


def whoami_text(chat_id: str, user_id: str) -> str:
    """The answer to ``/image whoami``: the ids to put in ALLOWED_CHAT_IDS / ALLOWED_USER_IDS."""
    return (
        f"This chat's id: {chat_id}\n"
        f"Your user id: {user_id}\n"
        f"To let everyone in this chat use the bot, add {chat_id} to ALLOWED_CHAT_IDS; "
        "to let one person use it in any chat, add their user id to ALLOWED_USER_IDS. "
        "Then restart SakaiBot."
    )

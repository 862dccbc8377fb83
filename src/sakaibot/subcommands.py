"""The ``/image`` subcommands other than a new image: one small handler per verb.

Each handler answers with the text to reply (or ``None`` when there is
nothing to say) and raises a :class:`~sakaibot.errors.RequestRejected` for a
refusal; :class:`~sakaibot.bot.ImageBot` sends either. Handlers are found
through a table keyed by the parsed command's type. Read-only verbs (help,
models, status, history, lang) answer anyone; stats, cache, whoami and choosing a
chat's language only the owner; cancel, retry, resend/file and again act on the
sender's own jobs (named by id, or, for again, file and resend, by replying to the
image); set changes the chat's default flags, for the owner and the users the owner
named. Every answer is in the chat's language (:class:`~sakaibot.i18n.Languages`).
"""

from __future__ import annotations

import asyncio
import logging
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
    LangCommand,
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
    UnknownLanguage,
    UnknownModel,
    format_wait,
)
from sakaibot.generation import GeneratedImage
from sakaibot.i18n import LANGUAGE_SETTING, N_, Languages, Texts
from sakaibot.jobs import Job, decode_request, random_seed
from sakaibot.models import ModelRegistry
from sakaibot.pipeline import JobPipeline, image_actions
from sakaibot.queues import JobQueues
from sakaibot.quota import DAY_S, DailyBudgets
from sakaibot.reports import compute_stats, format_history, format_stats
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
        languages: Languages | None = None,
        budgets: DailyBudgets | None = None,
        draw_chart: DrawChart | None = None,
        max_per_request: int = DEFAULT_MAX_PER_REQUEST,
    ) -> None:
        self._budgets = budgets
        #: Draws the owner's day chart as PNG bytes (``None``: text only).
        self._draw_chart = draw_chart
        self._registry = registry
        #: Each chat's language; English alone when none is given (tests of one language).
        self._languages = languages or Languages("en", languages=("en",))
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
        self._verb(LangCommand, self._lang)
        self._verb(DefaultsCommand, self._defaults)

    def _verb(
        self, kind: type[_C], handler: Callable[[IncomingMessage, _C], Awaitable[str | None]]
    ) -> None:
        self._verbs[kind] = handler

    async def answer(self, message: IncomingMessage, command: Command) -> str | None:
        """Run ``command``'s handler; its reply text, if any."""
        return await self._verbs[type(command)](message, command)

    def _texts(self, message: IncomingMessage) -> Texts:
        return self._languages.for_chat(message.chat_id)

    # -- read-only -------------------------------------------------------------

    async def _help(self, message: IncomingMessage, command: HelpCommand) -> str:
        return usage_text(
            self._registry, self._texts(message), max_per_request=self._max_per_request
        )

    async def _models(self, message: IncomingMessage, command: ModelsCommand) -> str:
        texts = self._texts(message)
        loads = self._queues.loads()
        if not loads:
            return texts.gettext(
                "No image model is configured. The bot's owner should set "
                "FLUX_WORKER_URL or SDXL_WORKER_URL (see `sakaibot verify`)."
            )
        lines = [texts.gettext("Models:")]
        for load in loads:
            model = load.model
            lines.append(
                texts.gettext(
                    "• {model} ({label}): {waiting} waiting, {running} generating; "
                    "a new image would be ready in about {eta}. Flags: {flags}",
                    model=model.name,
                    label=model.display_name,
                    waiting=load.waiting,
                    running=load.running,
                    eta=format_wait(load.eta_new_s, texts),
                    flags=" ".join(model.supported_flags()),
                )
            )
        lines.append(
            texts.gettext(
                "Example: /image={model}={prompt}",
                model=loads[0].model.name,
                prompt=EXAMPLE_PROMPT,
            )
        )
        lines.append(per_request_text(self._max_per_request, texts))
        return "\n".join(lines)

    async def _status_of(self, message: IncomingMessage, command: StatusCommand) -> str:
        texts = self._texts(message)
        user_id = message.user_id
        jobs = self._queues.jobs_of(user_id)
        jobs += [(job, None) for job in self._pipeline.delivering() if job.user_id == user_id]
        if not jobs:
            example = self._registry.names()[0] if self._registry else "flux"
            return texts.gettext(
                "You have no images waiting or in progress. Start one with /image={model}={prompt}",
                model=example,
                prompt=EXAMPLE_PROMPT,
            )
        lines = [texts.gettext("Your images:")]
        for job, place in jobs:
            if place is None:
                where = _state_name(job, texts)
            else:
                where = texts.gettext(
                    "position {position}, ready in about {eta}",
                    position=place.position,
                    eta=format_wait(place.eta_s, texts),
                )
            lines.append(
                texts.gettext(
                    "• {job_id} {model}: {where}", job_id=job.id, model=job.model.name, where=where
                )
            )
        lines.append(texts.gettext("Cancel one with /image cancel <id>."))
        return "\n".join(lines)

    async def _history(self, message: IncomingMessage, command: HistoryCommand) -> str:
        records = await self._store.history(message.user_id, command.limit)
        return format_history(records, now_s=self._wall_clock(), texts=self._texts(message))

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
            job = stopped
        else:
            await self._pipeline.finish(job, JobCancelled("cancelled by the user"))
        return self._texts(message).gettext(
            "🚫 Cancelled job {job_id} ({model}).", job_id=job.id, model=job.model.display_name
        )

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
                self._texts(message).gettext(
                    "It still could not be sent. It stays kept; "
                    "try /image retry {job_id} again later.",
                    job_id=kept.job_id,
                )
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
            seed=random_seed() if model.supports("seed") else None,
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
            ),
            texts=self._texts(message),
        )
        as_file = command.as_file or request.options.as_file
        outgoing = OutgoingImage(
            image=image,
            caption=caption,
            filename=f"sakaibot-{record.model}-{record.id}{image.extension}",
            as_file=as_file,
            actions=image_actions(record.id, as_file=as_file, texts=self._texts(message)),
        )
        try:
            await self._pipeline.send_image(message.chat_id, outgoing, reply_to=message.message_id)
        except ChatError as exc:
            logger.warning("job %s: resend failed: %s", record.id, exc)
            return failed_text(exc.message_in(self._texts(message)))
        return None

    # -- the chat's defaults -----------------------------------------------------

    async def _defaults(self, message: IncomingMessage, command: DefaultsCommand) -> str:
        chat_id = message.chat_id
        texts = self._texts(message)
        if command.flag is None and not command.reset:
            defaults = await self._store.chat_defaults(chat_id)
            skipped = {
                default_flag_text(name, value): self._models_without(name)
                for name, value in defaults.items()
            }
            return defaults_text(list(skipped), {f: m for f, m in skipped.items() if m}, texts)
        # Anyone let in only by the chat (ALLOWED_CHAT_IDS) may read them, not change them.
        if not (message.from_owner or message.from_named_user):
            raise DefaultsLocked()
        if command.reset:
            return defaults_reset_text(await self._store.clear_chat_defaults(chat_id), texts)
        assert command.flag is not None
        await self._store.set_chat_default(chat_id, command.flag, command.value)
        if command.value is None:
            return default_cleared_text(command.flag, texts)
        return default_set_text(
            default_flag_text(command.flag, command.value),
            self._models_without(command.flag),
            texts,
        )

    def _models_without(self, flag: str) -> list[str]:
        """The configured models that do not take ``flag`` (its default skips them)."""
        return [spec.name for spec in self._registry if not spec.supports(flag)]

    # -- the owner's -----------------------------------------------------------

    async def _stats(self, message: IncomingMessage, command: StatsCommand) -> str:
        if not message.from_owner:
            raise OwnerOnly("/image stats")
        now_s = self._wall_clock()
        records = await self._store.jobs_since(now_s - command.days * DAY_S)
        queue = [(load.model.name, load.waiting, load.running) for load in self._queues.loads()]
        budgets = []
        if self._budgets is not None:
            await self._budgets.refresh()  # other front ends' counts too (Redis mode)
            budgets = self._budgets.uses(self._registry.names())
        texts = self._texts(message)
        text = format_stats(
            compute_stats(records, days=command.days, queue=queue, budgets=budgets), texts
        )
        if self._draw_chart is not None:
            # At least a day was read: the chart keeps the last 24 hours of it.
            await self._send_chart(message, texts, records, now_s)
        return text

    async def _send_chart(
        self, message: IncomingMessage, texts: Texts, records: list[JobRecord], now_s: float
    ) -> None:
        """The last day as a picture, sent before the text; a chart that fails is only logged."""
        assert self._draw_chart is not None
        try:
            png = await asyncio.to_thread(self._draw_chart, records, now_s)
        except Exception:
            logger.exception("stats: the chart could not be drawn")
            return
        width, height = png_size(png)
        outgoing = OutgoingImage(
            image=GeneratedImage(png, "image/png", ".png", width, height),
            caption=Caption((CaptionPart(texts.gettext(CHART_CAPTION)),)),
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
        texts = self._texts(message)
        if not self._cache.enabled:
            return texts.gettext("The result cache is turned off (CACHE_TTL_S=0).")
        if command.clear:
            removed = await self._cache.clear()
            return texts.gettext(
                "🧹 Cache cleared: {entries} removed.",
                entries=texts.ngettext("{count} entry", "{count} entries", removed),
            )
        summary = await self._cache.summary()
        since_s = self._wall_clock() - self._stats_days_default * DAY_S
        done = [r for r in await self._store.jobs_since(since_s) if r.state == StoredJobState.DONE]
        hits = sum(1 for r in done if r.cache_hit)
        if done:
            rate = texts.gettext("{percent:.0f}%", percent=100 * hits / len(done))
        else:
            rate = texts.gettext("no images yet")
        return texts.gettext(
            "Result cache: {entries}, {size_mb:.1f} MB of {max_mb:.0f} MB, each kept {ttl}.\n"
            "Hit rate over {days} days: {rate} ({hits} of {done}).\n"
            "Clear it with /image cache clear.",
            entries=texts.ngettext("{count} entry", "{count} entries", summary.entries),
            size_mb=summary.size_bytes / 1_000_000,
            max_mb=summary.max_bytes / 1_000_000,
            ttl=format_wait(summary.ttl_s, texts),
            days=self._stats_days_default,
            rate=rate,
            hits=hits,
            done=len(done),
        )

    async def _whoami(self, message: IncomingMessage, command: WhoamiCommand) -> str:
        # Owner only: ids are not secret, but a bot should not hand them to strangers.
        if not message.from_owner:
            raise OwnerOnly("/image whoami")
        return whoami_text(message.chat_id, message.user_id, self._texts(message))

    # -- the chat's language -----------------------------------------------------

    async def _lang(self, message: IncomingMessage, command: LangCommand) -> str:
        """``/image lang`` tells anyone; ``/image lang fa`` is the owner's to say."""
        languages = self._languages
        if command.language is None:
            texts = self._texts(message)
            return texts.gettext(
                "This chat is answered in {language}. The owner can change it with "
                "/image lang <code>; available: {codes}.",
                language=texts.gettext(LANGUAGE_NAMES[texts.language]),
                codes=", ".join(languages.names),
            )
        if not message.from_owner:
            raise OwnerOnly("/image lang")
        if command.language not in languages.names:
            raise UnknownLanguage(command.language, list(languages.names))
        await self._store.set_chat_setting(message.chat_id, LANGUAGE_SETTING, command.language)
        languages.remember({message.chat_id: command.language})
        texts = self._texts(message)
        return texts.gettext(
            "✅ This chat is now answered in {language}.",
            language=texts.gettext(LANGUAGE_NAMES[texts.language]),
        )


#: Each language's name, said in the language of the answer.
LANGUAGE_NAMES = {"en": N_("English"), "fa": N_("Persian")}


def _state_name(job: Job, texts: Texts) -> str:
    """A started job's state as ``/image status`` says it."""
    names = {
        "enhancing": N_("enhancing"),
        "generating": N_("generating"),
        "sending": N_("sending"),
    }
    state = job.state.value
    return texts.gettext(names[state]) if state in names else state


#: The words under the owner's stats chart.
CHART_CAPTION = N_("Images per hour and median wait over the last 24 hours")
#: Draws the day chart: the jobs of the last day and the time now in, PNG bytes out.
DrawChart = Callable[[list[JobRecord], float], bytes]


def png_size(png: bytes) -> tuple[int, int]:
    """Width and height from a PNG's header (its IHDR chunk)."""
    if png[:8] != b"\x89PNG\r\n\x1a\n" or len(png) < 24:
        raise ValueError("not a PNG")
    return int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")


def whoami_text(chat_id: str, user_id: str, texts: Texts) -> str:
    """The answer to ``/image whoami``: the ids to put in ALLOWED_CHAT_IDS / ALLOWED_USER_IDS."""
    return texts.gettext(
        "This chat's id: {chat_id}\n"
        "Your user id: {user_id}\n"
        "To let everyone in this chat use the bot, add {chat_id} to ALLOWED_CHAT_IDS; "
        "to let one person use it in any chat, add their user id to ALLOWED_USER_IDS. "
        "Then restart SakaiBot.",
        chat_id=chat_id,
        user_id=user_id,
    )

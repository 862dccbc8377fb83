"""One job from the front of its queue to the chat: enhance → generate → deliver.

Enhancing and generating hold the model's queue slot; delivering does not.
Until its image is being sent, a job runs in a task of its own, so that
``/image cancel`` can stop it (:meth:`JobPipeline.cancel_running`): the slot is
free at once, and an answer that comes later is dropped.

This is where every job ends with exactly one outcome: the image, or one
clear error in place of the status message. Failures that are not the user's
fault give their rate-limit slot back. The generator is called through its
``(success, data, error)`` boundary; nothing here retries (the worker client
does, inside the boundary).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from functools import partial
from typing import TypeVar

from sakaibot.albums import Albums, Gathering, MissingImage
from sakaibot.breaker import Breakers, CircuitBreaker, counts_as_unavailable
from sakaibot.cache import Cache, CacheHit
from sakaibot.captions import Caption, CaptionFacts, build_caption
from sakaibot.chat.port import Action, ChatPort, OutgoingImage
from sakaibot.commands import STYLE_WORDS, ImageOptions, ImageRequest
from sakaibot.enhance_ahead import EnhanceAhead
from sakaibot.enhancer import EnhancedPrompt, PromptEnhancer
from sakaibot.errors import (
    CHARGED_KINDS,
    ChatError,
    DeliveryFailed,
    FloodWait,
    JobCancelled,
    PausedUntilReset,
    QuotaExhausted,
    SakaiBotError,
    StoreUnavailable,
)
from sakaibot.generation import GeneratedImage, GenerationParams, ImageGenerator
from sakaibot.i18n import ENGLISH, Texts, english_for
from sakaibot.jobs import Album, Job, JobState
from sakaibot.limits import Allowance
from sakaibot.models import ASPECT_RATIOS, ModelRegistry, ModelSpec
from sakaibot.queues import JobQueues, QueuePlace
from sakaibot.quota import DailyBudgets, LocalBudgets
from sakaibot.status import (
    StatusScheduler,
    action_label,
    album_failed_text,
    enhancing_text,
    failed_text,
    generating_text,
    paused_text,
    queued_text,
    sending_text,
    status_actions,
    status_text,
)
from sakaibot.store import JobRecord, Store, StoredJobState, ended
from sakaibot.store.images import ImageFiles
from sakaibot.telemetry import DELIVERED, NoTelemetry, Telemetry
from sakaibot.undelivered import UndeliveredImages

logger = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class JobOutcome:
    """How one ``/image=`` command ended: an image, an error, or a rejection."""

    chat_id: str
    reply_to: int
    user_id: str
    ok: bool
    job_id: str | None = None
    model: str | None = None
    error_kind: str | None = None
    #: What the user was told, for failures.
    error: str | None = None
    #: The chat's id of the message carrying the image.
    image_message_id: int | None = None

    @classmethod
    def of_job(
        cls,
        job: Job | Album,
        *,
        error_kind: str | None = None,
        error: str | None = None,
        image_message_id: int | None = None,
    ) -> JobOutcome:
        """The outcome of an accepted job, or the one outcome of a ``--n`` request
        (named by its album's id): ``ok`` exactly when no error is given."""
        return cls(
            chat_id=job.chat_id,
            reply_to=job.reply_to,
            user_id=job.user_id,
            ok=error_kind is None,
            job_id=job.id,
            model=job.model if isinstance(job, Album) else job.model.name,
            error_kind=error_kind,
            error=error,
            image_message_id=image_message_id,
        )


OutcomeListener = Callable[[JobOutcome], None]


@dataclass(frozen=True)
class Delivery:
    """One image on its way to the chat, with what its caption and the cache need."""

    job: Job
    image: GeneratedImage
    #: Which enhancer wrote the prompt, or :data:`ORIGINAL_PROMPT`.
    prompt_source: str
    prompt_used: str
    #: When the step before sending began (``clock`` seconds).
    started_s: float
    #: How the caption names the model; the job's model when ``None``.
    model_label: str | None = None
    from_cache: bool = False
    #: The cache entry this image came from or went to, for its upload reference.
    cache_key: str | None = None
    #: The chat's reference to an earlier upload of the same image.
    upload_ref: str | None = None
    #: ``False`` for an image the cache must not keep as the asked model's (a fallback's).
    cacheable: bool = True

    @property
    def label(self) -> str:
        return self.model_label or self.job.model.display_name

    @property
    def to_cache(self) -> bool:
        """Whether the image is new and may answer the same request later."""
        return self.cacheable and not self.from_cache


@dataclass(frozen=True)
class Delivered:
    """A job's image reached the chat (``message_id``: where; ``None`` when unknown)."""

    message_id: int | None


#: How often a job waiting for a half-open model checks whether the probe is done.
_PROBE_POLL_S = 1.0
#: A started job may be cancelled until its image is being sent (QUEUED: taken
#: from the queue, looking in the cache or waiting for a paused model).
_CANCELLABLE_STATES = frozenset({JobState.QUEUED, JobState.ENHANCING, JobState.GENERATING})


def image_filename(job: Job, extension: str) -> str:
    """The delivered file's name: the job's id (and its album's) for finding it again."""
    if job.album is not None:
        name = f"{job.model.name}-{job.album.id}-{job.album_index + 1}-{job.id}"
    else:
        name = f"{job.model.name}-{job.id}"
    return f"sakaibot-{name}{extension}"


def model_label(job: Job, model: ModelSpec) -> str:
    """How the caption names the model that made the image."""
    if model is job.model:
        return job.model.display_name
    return f"{model.display_name} (fallback for {job.model.display_name})"


def usable_fallback(
    model: ModelSpec, options: ImageOptions, registry: ModelRegistry
) -> ModelSpec | None:
    """``model``'s fallback, if it exists and takes every flag the request uses."""
    if model.fallback is None:
        return None
    fallback = registry.get(model.fallback)
    if fallback is None or fallback is model:
        return None
    needed = {
        "ar": options.aspect_ratio is not None,
        "seed": options.seed is not None,
        "neg": options.negative_prompt is not None,
        "steps": options.steps is not None,
    }
    if any(used and not fallback.supports(flag) for flag, used in needed.items()):
        return None
    return fallback


def styled_prompt(prompt: str, request: ImageRequest) -> str:
    """Append the ``--style`` words, whoever wrote the prompt."""
    style = request.options.style
    if style is None:
        return prompt
    return f"{prompt.rstrip(' .')}, {STYLE_WORDS[style]}"


def generation_params(prompt: str, request: ImageRequest) -> GenerationParams:
    options = request.options
    width, height = ASPECT_RATIOS[options.aspect_ratio] if options.aspect_ratio else (None, None)
    return GenerationParams(
        prompt=prompt,
        negative_prompt=options.negative_prompt,
        width=width,
        height=height,
        seed=options.seed,
        steps=options.steps,
    )


class JobPipeline:
    """Runs one job; owns every failure so the queue worker never sees one."""

    def __init__(
        self,
        *,
        generator: ImageGenerator,
        enhancer: PromptEnhancer | None,
        chat: ChatPort,
        status: StatusScheduler,
        allowance: Allowance,
        clock: Callable[[], float],
        on_outcome: OutcomeListener,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        max_delivery_wait_s: float = 300.0,
        undelivered: UndeliveredImages | None = None,
        store: Store,
        images: ImageFiles,
        wall_clock: Callable[[], float] = time.time,
        cache: Cache,
        breakers: Breakers,
        registry: ModelRegistry,
        queues: JobQueues,
        budgets: DailyBudgets | None = None,
        telemetry: Telemetry | None = None,
        ahead: EnhanceAhead | None = None,
        texts_for: Callable[[str], Texts] = english_for,
    ) -> None:
        self._budgets = budgets or LocalBudgets({}, wall_clock)
        self._telemetry: Telemetry = telemetry or NoTelemetry()
        self._generator = generator
        self._enhancer = enhancer
        self._ahead = ahead or EnhanceAhead(enhancer, ahead=0, status=status)
        self._chat = chat
        self._status = status
        self._allowance = allowance
        self._clock = clock
        self._on_outcome = on_outcome
        self._sleep = sleep
        self._max_delivery_wait_s = max_delivery_wait_s
        self._undelivered = undelivered
        self._store = store
        self._images = images
        self._wall_clock = wall_clock
        self._cache = cache
        self._breakers = breakers
        self._registry = registry
        #: The jobs still waiting, to tell them when their model is paused.
        self._queues = queues
        #: A chat's language, for a job known only by its record (its model gone).
        self._texts_for = texts_for
        #: Uploads under way, and the job each one delivers.
        self._deliveries: dict[asyncio.Task[None], Job] = {}
        #: The task running each started job until its image is handed over,
        #: and an event set once :meth:`run` is over (the job ended one way or another).
        self._running: dict[str, tuple[asyncio.Task[None], asyncio.Event]] = {}
        #: Jobs that hold a model's half-open probe, and that model's breaker,
        #: until they report how the worker did (or end in some other way).
        self._probes: dict[str, CircuitBreaker] = {}
        #: The ``--n`` requests whose images are held until all have ended.
        self.albums = Albums()

    def _show(self, job: Job, text: str | None = None) -> None:
        """Show ``text`` as ``job``'s step (in its album's one status message, if any)."""
        # Until the image is on its way, the job can be cancelled from its status.
        actions = () if job.state is JobState.SENDING else status_actions(job)
        self._status.show(
            job.status_key,
            chat_id=job.chat_id,
            reply_to=job.reply_to,
            text=status_text(job, text),
            actions=actions,
        )

    def _step(self, job: Job, state: JobState, started_s: float) -> float:
        """Enter ``state``, recording how long the previous step took."""
        now_s = self._clock()
        job.timings_s[job.state.value] = now_s - started_s
        job.advance(state)
        return now_s

    async def run(self, job: Job) -> None:
        if job.persisted is not None and not await job.persisted:
            return  # never stored, never announced: the bot already said so
        work = asyncio.create_task(self._run(job), name=f"job-{job.id}")
        over = asyncio.Event()
        self._running[job.id] = (work, over)
        try:
            await work
        except asyncio.CancelledError:
            current = asyncio.current_task()
            stopping = current is not None and current.cancelling() > 0
            if stopping or not work.cancelled() or job.state is not JobState.CANCELLED:
                raise  # a hard stop of the queue worker, not /image cancel
            await self.finish(job, JobCancelled("cancelled by the user"))
        except Exception as exc:
            logger.exception("job %s: unexpected failure", job.id)
            await self.finish(job, SakaiBotError(f"unexpected {type(exc).__name__}"))
        finally:
            # A hard stop ends no job (it runs again after the restart), but the
            # probe must still go back; every other way out went through finish().
            self._release_probe(job.id)
            self._running.pop(job.id, None)
            over.set()

    async def cancel_running(self, job: Job) -> bool:
        """Stop a started job whose image is not yet being sent (``/image cancel``).

        ``False`` when it is too late (the image is on its way) or the job is not
        running here. Otherwise the job's task is cancelled: whatever it was
        waiting for (the LLM, the worker, the shared queue) is abandoned, and
        :meth:`run` ends the job as cancelled, exactly once; this returns when
        it has (status removed, written down, the model's slot free).
        """
        running = self._running.get(job.id)
        if running is None or job.state not in _CANCELLABLE_STATES:
            return False
        work, over = running
        if work.done():
            return False
        job.advance(JobState.CANCELLED)
        work.cancel()
        logger.info("job %s (%s): cancelled by its owner", job.id, job.model.name)
        await over.wait()
        return True

    async def _run(self, job: Job) -> None:
        request = job.request
        step_started_s = job.started_at_s if job.started_at_s is not None else self._clock()
        job.timings_s["waited"] = step_started_s - job.created_at_s
        # An identical request may have finished while this one waited.
        hit = await self._cache.lookup(job.model, request)
        if hit is not None:
            await self.deliver_cached(job, hit)
            return
        model = await self._model_for(job)
        if model is None:
            await self.finish(job, self._paused_until_reset(job.model))
            return
        if not self._ahead.wanted(job):
            enhanced = EnhancedPrompt(text=request.prompt)
        else:
            ready = self._ahead.ready(job)
            if ready is not None:
                enhanced = ready  # improved while the job waited
            else:
                step_started_s = self._step(job, JobState.ENHANCING, step_started_s)
                self._show(job, enhancing_text(job.texts))
                enhanced = await self._ahead.improve(job)
            if not enhanced.enhanced:
                self._telemetry.enhancer_fallback()
        prompt_used = styled_prompt(enhanced.text, request)
        # Counted as the image is asked for, so jobs side by side never overdraw
        # the day's budget (the wait for the LLM may have used it up).
        if not await self._budgets.take(model.name):
            await self.finish(job, self._paused_until_reset(model))
            return

        step_started_s = self._step(job, JobState.GENERATING, step_started_s)
        label = model_label(job, model)
        self._show(job, generating_text(label, job.texts))
        params = replace(generation_params(prompt_used, request), request_id=job.id)
        result = await self._generator.generate(model, params)
        if not result.success or result.data is None:
            # No image, no use of the day's allocation (a job cancelled while the
            # worker was at it stays counted: the worker most likely finished it).
            await self._budgets.give_back(model.name)
        if isinstance(result.error, QuotaExhausted):
            await self._budgets.quota_exhausted(model.name)
            logger.warning(
                "%s: the worker's daily quota is used up; paused until 00:00 UTC", model.name
            )
        if isinstance(result.error, JobCancelled):
            # Taken back from a shared queue by /image cancel.
            await self.finish(job, JobCancelled("cancelled by the user"))
            return
        self._report_to_breaker(job, model, result.error if not result.success else None)
        if not result.success or result.data is None:
            await self.finish(job, result.error or SakaiBotError("generator returned no image"))
            return
        image = result.data

        await self.hand_over(
            Delivery(
                job,
                image,
                enhanced.source,
                prompt_used,
                step_started_s,
                model_label=label,
                # A fallback's image is not the asked model's result: never cache it as one.
                cacheable=model is job.model,
            )
        )

    async def _model_for(self, job: Job) -> ModelSpec | None:
        """The model to generate with: the job's own, or its fallback while the
        job's model is paused (by its circuit breaker or until 00:00 UTC); else
        wait for the probe. ``None``: paused until 00:00 UTC, with no fallback."""
        told = False
        while True:
            breaker = self._breakers.get(job.model.name)
            until_reset = self._budgets.paused_until_s(job.model.name) is not None
            if not until_reset and self._allowed(job, breaker):
                return job.model
            fallback = usable_fallback(job.model, job.request.options, self._registry)
            if (
                fallback is not None
                and self._budgets.paused_until_s(fallback.name) is None
                and self._allowed(job, self._breakers.get(fallback.name))
            ):
                return fallback
            if until_reset:
                return None  # hours away: the job ends now, saying when the model is back
            if not told:
                self._show(
                    job,
                    paused_text(job.model.display_name, breaker.retry_after_s(), job.texts),
                )
                told = True
            await self._sleep(max(breaker.retry_after_s(), _PROBE_POLL_S))

    def _allowed(self, job: Job, breaker: CircuitBreaker) -> bool:
        """Whether ``job`` may use ``breaker``'s model now; notes it when it is the probe."""
        if not breaker.allow():
            return False
        if breaker.probe_out:
            self._probes[job.id] = breaker
        return True

    def _paused_until_reset(self, model: ModelSpec) -> PausedUntilReset:
        until_s = self._budgets.paused_until_s(model.name)
        retry_after_s = 0.0 if until_s is None else until_s - self._wall_clock()
        return PausedUntilReset(model.display_name, retry_after_s)

    def _report_to_breaker(self, job: Job, model: ModelSpec, error: SakaiBotError | None) -> None:
        self._probes.pop(job.id, None)  # reported: the breaker takes it from here
        breaker = self._breakers.get(model.name)
        if error is None:
            if breaker.record_success():
                logger.info("%s is back: its circuit breaker closed", model.name)
            return
        if breaker.record_failure(counts=counts_as_unavailable(error)):
            logger.warning(
                "%s keeps failing: paused for %.0f s", model.name, breaker.retry_after_s()
            )
            self._tell_paused(model, breaker.retry_after_s())

    def _tell_paused(self, model: ModelSpec, retry_after_s: float) -> None:
        # Everyone waiting for the model hears it once, with when it is tried again.
        for job in self._queues.waiting_jobs(model.name):
            self._show(job, paused_text(model.display_name, retry_after_s, job.texts))

    def show_shared_place(self, job_id: str, position: int) -> None:
        """Show a job's place in the shared queue (Redis mode), ``0`` meaning generating.

        Other front ends share that queue: its positions are looked up, not computed.
        """
        job = self._queues.find(job_id)
        if job is None:
            return
        label = job.model.display_name
        self._show(
            job,
            queued_text(
                label, QueuePlace(position, position * job.model.typical_duration_s), job.texts
            )
            if position > 0
            else generating_text(label, job.texts),
        )

    async def hand_over(self, delivery: Delivery) -> None:
        """The image exists: keep it, note that it is being sent, and send it.

        All of that runs in its own task, so the model's slot is free for the
        next job at once; ``drain()`` waits for every delivery.
        """
        job = delivery.job
        if job.state is not JobState.SENDING:
            delivery = replace(
                delivery, started_s=self._step(job, JobState.SENDING, delivery.started_s)
            )
        if job.album is None:  # an album says "sending" once, for all its images
            self._show(job, sending_text(job.texts))
        task = asyncio.create_task(self._keep_and_deliver(delivery), name=f"deliver-{job.id}")
        self._deliveries[task] = job
        task.add_done_callback(self._deliveries.pop)

    async def _keep_and_deliver(self, delivery: Delivery) -> None:
        """Keep the image, write down that it is being sent, then send it.

        The note is written (and waited for) before the upload starts, so that
        after a crash the job is looked for in the chat instead of being sent twice.
        """
        job, image = delivery.job, delivery.image
        cache_key = delivery.cache_key
        digest: str | None = None
        try:
            digest = await self._images.put(image)
            await self._cache.trim(keep=digest)
            remembered: Awaitable[str | None] | None = None
            if delivery.to_cache:
                remembered = self._cache.remember(
                    job.model,
                    job.request,
                    image,
                    image_hash=digest,
                    prompt_used=delivery.prompt_used,
                    enhancer=delivery.prompt_source,
                )
            noted = self._store.update_job(
                job.id,
                state=StoredJobState.DELIVERING,
                prompt_used=delivery.prompt_used,
                enhancer=delivery.prompt_source,
                image_hash=digest,
                image_ext=image.extension,
                image_bytes=image.size_bytes,
                cache_hit=delivery.from_cache,
                waited_s=job.timings_s.get("waited"),
                enhancing_s=job.timings_s.get(JobState.ENHANCING.value),
                generating_s=job.timings_s.get(JobState.GENERATING.value),
            )
            if remembered is None:
                await noted
            else:
                # Made together, so the store writes them in one transaction.
                cache_key, _ = await asyncio.gather(remembered, noted)
        except (StoreUnavailable, OSError) as exc:
            # Sending matters more than the note; without it a crash in the next
            # seconds could send this image twice, which is the lesser harm.
            logger.error("job %s: could not note the delivery: %s", job.id, exc)
        outgoing = self._outgoing(delivery, cache_key, digest)
        if job.album is not None:
            # Telegram takes no buttons on an album: its images offer no actions.
            outgoing = replace(outgoing, actions=())
            gathering = self.albums.made(job, outgoing, self._caption_facts(delivery))
            if gathering is None:
                self._show(job)  # one more ready
            else:
                await self._send_album(gathering)
            return
        await self._deliver(job, outgoing, delivery.started_s)

    def _caption_facts(self, delivery: Delivery) -> CaptionFacts:
        job, options = delivery.job, delivery.job.request.options
        return CaptionFacts(
            model_label=delivery.label,
            prompt_source=delivery.prompt_source,
            prompt_used=delivery.prompt_used,
            options=options,
            elapsed_s=delivery.started_s - job.created_at_s,
            seed=options.seed,
            steps_requested=job.request.steps_requested,
            job_id=job.id,
            from_cache=delivery.from_cache,
        )

    def _outgoing(
        self, delivery: Delivery, cache_key: str | None, digest: str | None
    ) -> OutgoingImage:
        job, options = delivery.job, delivery.job.request.options
        caption = build_caption(self._caption_facts(delivery), texts=job.texts)
        return OutgoingImage(
            image=delivery.image,
            caption=caption,
            filename=image_filename(job, delivery.image.extension),
            as_file=options.as_file,
            upload_ref=delivery.upload_ref,
            remember_upload=self._cache.note_upload(cache_key) if cache_key is not None else None,
            actions=image_actions(job.id, as_file=options.as_file, texts=job.texts),
            kept_path=(
                self._images.path_of(digest, delivery.image.extension)
                if digest is not None
                else None
            ),
        )

    async def deliver_cached(self, job: Job, hit: CacheHit) -> None:
        """Answer ``job`` with a stored result: no LLM, no worker."""
        self._telemetry.cache_hit(job.model.name)
        await self.hand_over(
            Delivery(
                job,
                hit.image,
                hit.entry.enhancer,
                hit.entry.prompt_used,
                job.started_at_s if job.started_at_s is not None else self._clock(),
                from_cache=True,
                cache_key=hit.entry.key,
                upload_ref=hit.entry.upload_ref,
            )
        )

    def delivering(self) -> list[Job]:
        """Jobs whose image is on its way to the chat."""
        return list(self._deliveries.values())

    async def drain(self) -> None:
        """Wait until every image handed to the chat has been delivered or failed."""
        while self._deliveries:
            await asyncio.gather(*self._deliveries)

    async def aclose(self) -> None:
        """Abandon deliveries still running (a hard stop)."""
        for delivery in list(self._deliveries):
            delivery.cancel()
        await asyncio.gather(*self._deliveries, return_exceptions=True)

    async def _deliver(self, job: Job, outgoing: OutgoingImage, started_s: float) -> None:
        try:
            message_id = await self.send_image(job.chat_id, outgoing, reply_to=job.reply_to)
        except ChatError as exc:
            logger.warning("job %s: delivery failed: %s", job.id, exc)
            await self.finish(job, await self._undeliverable(job, outgoing, exc))
            return
        except Exception as exc:
            logger.exception("job %s: unexpected failure while delivering", job.id)
            await self.finish(job, SakaiBotError(f"unexpected {type(exc).__name__}"))
            return
        self._step(job, JobState.DONE, started_s)
        await self.finish(job, Delivered(message_id))

    async def _undeliverable(
        self, job: Job, outgoing: OutgoingImage, exc: ChatError
    ) -> DeliveryFailed:
        """Keep an image the chat refused (for ``/image retry``); the failure to end it with."""
        undelivered = self._undelivered
        kept = undelivered is not None and await asyncio.to_thread(
            partial(
                undelivered.keep,
                job_id=job.id,
                user_id=job.user_id,
                chat_id=job.chat_id,
                reply_to=job.reply_to,
                image=outgoing,
            )
        )
        kept_for_s = undelivered.retention_s if kept and undelivered is not None else None
        failure = DeliveryFailed(str(exc), job_id=job.id, kept_for_s=kept_for_s)
        failure.__cause__ = exc
        return failure

    async def send_image(self, chat_id: str, outgoing: OutgoingImage, *, reply_to: int) -> int:
        """Send an image; a flood wait is waited out, up to the delivery budget."""
        return await self._past_flood_waits(
            chat_id,
            "delivery",
            lambda: self._chat.send_image(chat_id, outgoing, reply_to=reply_to),
        )

    async def _past_flood_waits(
        self, chat_id: str, what: str, send: Callable[[], Awaitable[T]]
    ) -> T:
        """``send()``, again after each flood wait, while they add up to the delivery budget."""
        waited_s = 0.0
        while True:
            try:
                return await send()
            except FloodWait as exc:
                if waited_s + exc.retry_after_s > self._max_delivery_wait_s:
                    raise
                logger.warning(
                    "chat %s: flood wait of %.0f s before %s", chat_id, exc.retry_after_s, what
                )
                waited_s += exc.retry_after_s
                self._telemetry.flood_wait()
                await self._sleep(exc.retry_after_s)

    async def finish(self, job: Job | JobRecord, outcome: Delivered | SakaiBotError) -> None:
        """End ``job`` with ``outcome``: the one way every job ends, whatever happened.

        In this order: the half-open probe goes back (if the job held it and
        never reported), the rate-limit slot is refunded when the failure is not
        the user's doing (see ``CHARGED_KINDS``), the ending is written to the
        store *and waited for*, and only then is the user told (status, outcome).
        So a restart never brings back a job whose user saw it end. A store that
        fails here is logged and the user is told anyway: what they see is true.

        An image of an album tells its album instead: the user hears once, when
        every image of the request has ended (:meth:`_send_album`).

        ``job`` is a :class:`JobRecord` only when recovery gives up on a job it
        could not rebuild (its model is gone).
        """
        await self._record_ending(job, outcome)
        if isinstance(outcome, Delivered):
            self._status.finish(job.id)
            self._on_outcome(_outcome_of(job, image_message_id=outcome.message_id))
            return
        error = outcome
        if isinstance(job, Job) and job.album is not None:
            logger.info("job %s (%s) failed: %s: %s", job.id, job.model.name, error.kind, error)
            part = MissingImage(job.album_index, job.id, job.request.options.seed, error.kind)
            gathering = self.albums.failed(job.album, part)
            if gathering is None:
                self._show(job)
            else:
                await self._send_album(gathering)
            return
        texts = job.texts if isinstance(job, Job) else self._texts_for(job.chat_id)
        message = error.message_in(texts)
        if isinstance(error, JobCancelled):
            # The bot answers the /image cancel itself: the status just goes.
            self._status.finish(job.id)
        else:
            logger.info("job %s (%s) failed: %s: %s", job.id, _model_name(job), error.kind, error)
            self._status.finish(job.id, final_text=failed_text(message))
        self._on_outcome(_outcome_of(job, error_kind=error.kind, error=message))

    async def _record_ending(
        self, job: Job | JobRecord, outcome: Delivered | SakaiBotError
    ) -> None:
        """Everything of :meth:`finish` but telling the user: probe, refund, the store."""
        self._release_probe(job.id)
        if isinstance(job, Job):
            job.finished_at_s = self._clock()
        if isinstance(outcome, Delivered):
            fields: dict[str, object] = {
                "state": StoredJobState.DONE,
                "delivered_message_id": outcome.message_id,
                "finished_at_s": self._wall_clock(),
            }
            if isinstance(job, Job) and JobState.SENDING.value in job.timings_s:
                fields["uploading_s"] = job.timings_s[JobState.SENDING.value]
            # Written and waited for like every ending, but in the next group
            # commit: the "delivering" note before the upload already makes a
            # delivery safe across a crash (recovery finds the image by its tag),
            # so this write need not cost a commit of its own.
            await self._write_ending(job.id, fields, grouped=True)
            self._report_ending(job, DELIVERED)
            return
        error = outcome
        cancelled = isinstance(error, JobCancelled)
        if isinstance(job, Job):
            if cancelled and job.state is not JobState.CANCELLED:
                job.advance(JobState.CANCELLED)
            elif not job.state.finished:
                job.state = JobState.FAILED
            job.error_kind = error.kind
            stamp, refunded_before = job.limiter_stamp, False
            cancelled = cancelled or job.state is JobState.CANCELLED
        else:
            stamp = None if job.refunded else job.created_at_s
            refunded_before = job.refunded
        refund = error.kind not in CHARGED_KINDS and stamp is not None
        texts = job.texts if isinstance(job, Job) else self._texts_for(job.chat_id)
        if refund and stamp is not None:
            self._allowance.refund(job.user_id, stamp)
        await self._write_ending(
            job.id,
            ended(
                StoredJobState.CANCELLED if cancelled else StoredJobState.FAILED,
                at_s=self._wall_clock(),
                refunded=refund or refunded_before,
                kind=error.kind,
                message=error.message_in(texts),
            ),
        )
        self._report_ending(job, error.kind)

    async def _send_album(self, gathering: Gathering) -> None:
        """Every image of an album has ended: send those made as one album, then
        end each of them and tell the user once (one status, one outcome).

        Failed images were ended (and refunded) as they failed; the caption names them.
        """
        album, made, texts = gathering.album, gathering.in_order(), gathering.album.texts
        if not made:
            message = album_failed_text(album.size, gathering.reasons(texts), texts)
            logger.info("album %s: none of its %d images could be made", album.id, album.size)
            self._status.finish(album.id, final_text=failed_text(message))
            self._on_outcome(JobOutcome.of_job(album, error_kind="album_failed", error=message))
            return
        self._status.show(
            album.id, chat_id=album.chat_id, reply_to=album.reply_to, text=sending_text(texts)
        )
        caption = gathering.caption()
        try:
            message_ids = await self.send_album(
                album.chat_id,
                [part.outgoing for part in made],
                caption,
                reply_to=album.reply_to,
            )
        except ChatError as exc:
            logger.warning("album %s: delivery failed: %s", album.id, exc)
            failures = [await self._undeliverable(part.job, part.outgoing, exc) for part in made]
            for part, failure in zip(made, failures, strict=True):
                await self._record_ending(part.job, failure)
            message = failures[0].message_in(texts)
            self._status.finish(album.id, final_text=failed_text(message))
            self._on_outcome(JobOutcome.of_job(album, error_kind=failures[0].kind, error=message))
            return
        except Exception as exc:
            logger.exception("album %s: unexpected failure while delivering", album.id)
            error = SakaiBotError(f"unexpected {type(exc).__name__}")
            for part in made:
                await self._record_ending(part.job, error)
            message = error.message_in(texts)
            self._status.finish(album.id, final_text=failed_text(message))
            self._on_outcome(JobOutcome.of_job(album, error_kind=error.kind, error=message))
            return
        for part, message_id in zip(made, message_ids, strict=False):
            if part.job.state is JobState.SENDING:
                self._step(part.job, JobState.DONE, self._clock())
            await self._record_ending(part.job, Delivered(message_id))
        self._status.finish(album.id)
        self._on_outcome(
            JobOutcome.of_job(album, image_message_id=message_ids[0] if message_ids else None)
        )

    async def album_found_delivered(
        self, album: Album, records: list[JobRecord], message_id: int | None
    ) -> None:
        """After a restart: the album is in the chat already; its images end delivered."""
        for record in records:
            await self._record_ending(record, Delivered(message_id))
        self._status.finish(album.id)
        self._on_outcome(JobOutcome.of_job(album, image_message_id=message_id))

    async def send_album(
        self, chat_id: str, images: list[OutgoingImage], caption: Caption, *, reply_to: int
    ) -> list[int]:
        """Send an album (one image alone, with the album's caption); flood waits as images."""
        if len(images) == 1:
            only = replace(images[0], caption=caption)
            return [await self.send_image(chat_id, only, reply_to=reply_to)]
        return await self._past_flood_waits(
            chat_id,
            "an album",
            lambda: self._chat.send_album(chat_id, images, caption, reply_to=reply_to),
        )

    def _report_ending(self, job: Job | JobRecord, outcome: str) -> None:
        timings = job.timings_s if isinstance(job, Job) else {}
        self._telemetry.job_ended(
            _model_name(job),
            outcome,
            waited_s=timings.get("waited"),
            generating_s=timings.get(JobState.GENERATING.value),
        )

    async def _write_ending(
        self, job_id: str, fields: dict[str, object], *, grouped: bool = False
    ) -> None:
        try:
            if grouped:
                await self._store.update_job_grouped(job_id, **fields)
            else:
                await self._store.update_job(job_id, **fields)
        except StoreUnavailable as exc:
            logger.error("job %s: its ending could not be written down: %s", job_id, exc)

    async def note_delivered_late(self, job_id: str, message_id: int) -> None:
        """A failed delivery was sent after all (``/image retry``): count it delivered.

        The job ended already (its user was told), so only the store changes.
        """
        await self._write_ending(
            job_id,
            {
                "state": StoredJobState.DONE,
                "delivered_message_id": message_id,
                "finished_at_s": self._wall_clock(),
            },
        )

    def _release_probe(self, job_id: str) -> None:
        """A job that held the half-open probe ends without a worker's verdict
        (cancelled, failed elsewhere, stopped): the next job probes."""
        probe = self._probes.pop(job_id, None)
        if probe is not None:
            probe.release_probe()


def image_actions(job_id: str, *, as_file: bool, texts: Texts = ENGLISH) -> tuple[Action, ...]:
    """What a delivered image offers: 🔁 again, and 📄 as a file unless it is one."""
    again = Action("again", job_id, action_label("again", texts))
    if as_file:
        return (again,)
    return (again, Action("file", job_id, action_label("file", texts)))


def _model_name(job: Job | JobRecord) -> str:
    return job.model.name if isinstance(job, Job) else job.model


def _outcome_of(
    job: Job | JobRecord,
    *,
    error_kind: str | None = None,
    error: str | None = None,
    image_message_id: int | None = None,
) -> JobOutcome:
    if isinstance(job, Job):
        return JobOutcome.of_job(
            job, error_kind=error_kind, error=error, image_message_id=image_message_id
        )
    return JobOutcome(
        chat_id=job.chat_id,
        reply_to=job.reply_to,
        user_id=job.user_id,
        ok=error_kind is None,
        job_id=job.id,
        model=job.model,
        error_kind=error_kind,
        error=error,
        image_message_id=image_message_id,
    )

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

from sakaibot.breaker import Breakers, CircuitBreaker, counts_as_unavailable
from sakaibot.cache import Cache, CacheHit
from sakaibot.captions import CaptionFacts, build_caption
from sakaibot.chat.port import ChatPort, OutgoingImage
from sakaibot.commands import STYLE_WORDS, ImageOptions, ImageRequest
from sakaibot.enhance_ahead import EnhanceAhead
from sakaibot.enhancer import EnhancedPrompt, PromptEnhancer
from sakaibot.errors import (
    CHARGED_KINDS,
    ChatError,
    DeliveryFailed,
    FloodWait,
    JobCancelled,
    SakaiBotError,
    StoreUnavailable,
)
from sakaibot.generation import GeneratedImage, GenerationParams, ImageGenerator
from sakaibot.jobs import Job, JobState
from sakaibot.limits import Allowance
from sakaibot.models import ASPECT_RATIOS, ModelRegistry, ModelSpec
from sakaibot.status import (
    ENHANCING_TEXT,
    SENDING_TEXT,
    StatusScheduler,
    failed_text,
    generating_text,
    paused_text,
)
from sakaibot.store import JobStates, Store, ended
from sakaibot.store.images import ImageFiles
from sakaibot.undelivered import UndeliveredImages

logger = logging.getLogger(__name__)


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
        job: Job,
        *,
        error_kind: str | None = None,
        error: str | None = None,
        image_message_id: int | None = None,
    ) -> JobOutcome:
        """The outcome of an accepted job: ``ok`` exactly when no error is given."""
        return cls(
            chat_id=job.chat_id,
            reply_to=job.reply_to,
            user_id=job.user_id,
            ok=error_kind is None,
            job_id=job.id,
            model=job.model.name,
            error_kind=error_kind,
            error=error,
            image_message_id=image_message_id,
        )


OutcomeListener = Callable[[JobOutcome], None]


#: How often a job waiting for a half-open model checks whether the probe is done.
_PROBE_POLL_S = 1.0
#: A started job may be cancelled until its image is being sent (QUEUED: taken
#: from the queue, looking in the cache or waiting for a paused model).
_CANCELLABLE_STATES = frozenset({JobState.QUEUED, JobState.ENHANCING, JobState.GENERATING})


def model_label(job: Job, model: ModelSpec) -> str:
    """How the caption names the model that made the image."""
    if model is job.model:
        return job.model.display_name
    return f"{model.display_name} (fallback for {job.model.display_name})"


def usable_fallback(
    model: ModelSpec, options: ImageOptions, registry: ModelRegistry | None
) -> ModelSpec | None:
    """``model``'s fallback, if it exists and takes every flag the request uses."""
    if registry is None or model.fallback is None:
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
        images: ImageFiles | None = None,
        wall_clock: Callable[[], float] = time.time,
        cache: Cache | None = None,
        breakers: Breakers | None = None,
        registry: ModelRegistry | None = None,
        on_model_paused: Callable[[ModelSpec, float], None] | None = None,
        ahead: EnhanceAhead | None = None,
    ) -> None:
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
        self._on_model_paused = on_model_paused
        #: Uploads under way, and the job each one delivers.
        self._deliveries: dict[asyncio.Task[None], Job] = {}
        #: The task running each started job until its image is handed over,
        #: and an event set once :meth:`run` is over (the job ended one way or another).
        self._running: dict[str, tuple[asyncio.Task[None], asyncio.Event]] = {}
        #: Jobs that hold a model's half-open probe, and that model's breaker,
        #: until they report how the worker did (or end in some other way).
        self._probes: dict[str, CircuitBreaker] = {}

    def _show(self, job: Job, text: str) -> None:
        self._status.show(job.id, chat_id=job.chat_id, reply_to=job.reply_to, text=text)

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
            await self.end_cancelled(job)
        except Exception as exc:
            logger.exception("job %s: unexpected failure", job.id)
            self.fail(job, SakaiBotError(f"unexpected {type(exc).__name__}"))
        finally:
            # Cancelled, failed unexpectedly or ended before generating: the
            # probe says nothing about the worker, so the next job probes.
            probe = self._probes.pop(job.id, None)
            if probe is not None:
                probe.release_probe()
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
        if self._cache is not None:
            hit = await self._cache.lookup(job.model, request)
            if hit is not None:
                await self.deliver_cached(job, hit)
                return
        model = await self._model_for(job)
        if not self._ahead.wanted(job):
            enhanced = EnhancedPrompt(text=request.prompt)
        elif (ready := self._ahead.ready(job)) is not None:
            enhanced = ready  # improved while the job waited
        else:
            step_started_s = self._step(job, JobState.ENHANCING, step_started_s)
            self._show(job, ENHANCING_TEXT)
            enhanced = await self._ahead.improve(job)
        prompt_used = styled_prompt(enhanced.text, request)

        step_started_s = self._step(job, JobState.GENERATING, step_started_s)
        label = model_label(job, model)
        self._show(job, generating_text(label))
        params = replace(generation_params(prompt_used, request), request_id=job.id)
        result = await self._generator.generate(model, params)
        if result.error is not None and result.error.kind == JobCancelled.kind:
            await self.end_cancelled(job)  # taken back from a shared queue by /image cancel
            return
        self._report_to_breaker(job, model, result.error if not result.success else None)
        if not result.success or result.data is None:
            error = result.error or SakaiBotError("generator returned no image")
            self.fail(job, error)
            return
        image = result.data

        await self.hand_over(
            job,
            image,
            enhanced.source,
            prompt_used,
            step_started_s,
            model_label=label,
            # A fallback's image is not the asked model's result: never cache it as one.
            cacheable=model is job.model,
        )

    async def _model_for(self, job: Job) -> ModelSpec:
        """The model to generate with: the job's own, or its fallback while the
        job's model is paused by its circuit breaker; else wait for the probe."""
        if self._breakers is None:
            return job.model
        told = False
        while True:
            breaker = self._breakers.get(job.model.name)
            if self._allowed(job, breaker):
                return job.model
            fallback = usable_fallback(job.model, job.request.options, self._registry)
            if fallback is not None and self._allowed(job, self._breakers.get(fallback.name)):
                return fallback
            if not told:
                self._show(job, paused_text(job.model.display_name, breaker.retry_after_s()))
                told = True
            await self._sleep(max(breaker.retry_after_s(), _PROBE_POLL_S))

    def _allowed(self, job: Job, breaker: CircuitBreaker) -> bool:
        """Whether ``job`` may use ``breaker``'s model now; notes it when it is the probe."""
        if not breaker.allow():
            return False
        if breaker.probe_out:
            self._probes[job.id] = breaker
        return True

    def _report_to_breaker(self, job: Job, model: ModelSpec, error: SakaiBotError | None) -> None:
        self._probes.pop(job.id, None)  # reported: the breaker takes it from here
        if self._breakers is None:
            return
        breaker = self._breakers.get(model.name)
        if error is None:
            if breaker.record_success():
                logger.info("%s is back: its circuit breaker closed", model.name)
            return
        if breaker.record_failure(counts=counts_as_unavailable(error)):
            logger.warning(
                "%s keeps failing: paused for %.0f s", model.name, breaker.retry_after_s()
            )
            if self._on_model_paused is not None:
                self._on_model_paused(model, breaker.retry_after_s())

    async def hand_over(
        self,
        job: Job,
        image: GeneratedImage,
        prompt_source: str,
        prompt_used: str,
        started_s: float,
        *,
        from_cache: bool = False,
        cache_key: str | None = None,
        upload_ref: str | None = None,
        model_label: str | None = None,
        cacheable: bool = True,
    ) -> None:
        """The image exists: keep it, note that it is being sent, and send it.

        All of that runs in its own task, so the model's slot is free for the
        next job at once; ``drain()`` waits for every delivery.
        """
        if job.state is not JobState.SENDING:
            started_s = self._step(job, JobState.SENDING, started_s)
        self._show(job, SENDING_TEXT)
        delivery = asyncio.create_task(
            self._keep_and_deliver(
                job,
                image,
                prompt_source,
                prompt_used,
                started_s,
                from_cache=from_cache,
                cache_key=cache_key,
                upload_ref=upload_ref,
                model_label=model_label or job.model.display_name,
                cacheable=cacheable and not from_cache,
            ),
            name=f"deliver-{job.id}",
        )
        self._deliveries[delivery] = job
        delivery.add_done_callback(self._deliveries.pop)

    async def _keep_and_deliver(
        self,
        job: Job,
        image: GeneratedImage,
        prompt_source: str,
        prompt_used: str,
        started_s: float,
        *,
        from_cache: bool,
        cache_key: str | None,
        upload_ref: str | None,
        model_label: str,
        cacheable: bool,
    ) -> None:
        """Keep the image, write down that it is being sent, then send it.

        The note is written (and waited for) before the upload starts, so that
        after a crash the job is looked for in the chat instead of being sent twice.
        """
        request = job.request
        digest: str | None = None
        try:
            digest = await self._images.put(image) if self._images is not None else None
            if self._cache is not None and digest is not None:
                await self._cache.trim(keep=digest)
            remembered: Awaitable[str | None] | None = None
            if self._cache is not None and cacheable and digest is not None:
                remembered = self._cache.remember(
                    job.model,
                    request,
                    image,
                    image_hash=digest,
                    prompt_used=prompt_used,
                    enhancer=prompt_source,
                )
            noted = self._store.update_job(
                job.id,
                state=JobStates.DELIVERING,
                prompt_used=prompt_used,
                enhancer=prompt_source,
                image_hash=digest,
                image_ext=image.extension,
                image_bytes=image.size_bytes,
                cache_hit=from_cache,
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
        caption = build_caption(
            CaptionFacts(
                model_label=model_label,
                prompt_source=prompt_source,
                prompt_used=prompt_used,
                options=request.options,
                elapsed_s=started_s - job.created_at_s,
                seed=request.options.seed,
                steps_requested=request.steps_requested,
                job_id=job.id,
                from_cache=from_cache,
            )
        )
        outgoing = OutgoingImage(
            image=image,
            caption=caption,
            filename=f"sakaibot-{job.model.name}-{job.id}{image.extension}",
            as_file=request.options.as_file,
            upload_ref=upload_ref,
            remember_upload=(
                self._cache.note_upload(cache_key)
                if self._cache is not None and cache_key is not None
                else None
            ),
            kept_path=(
                self._images.path_of(digest, image.extension)
                if self._images is not None and digest is not None
                else None
            ),
        )
        await self._deliver(job, outgoing, started_s)

    async def deliver_cached(self, job: Job, hit: CacheHit) -> None:
        """Answer ``job`` with a stored result: no LLM, no worker."""
        await self.hand_over(
            job,
            hit.image,
            hit.entry.enhancer,
            hit.entry.prompt_used,
            job.started_at_s if job.started_at_s is not None else self._clock(),
            from_cache=True,
            cache_key=hit.entry.key,
            upload_ref=hit.entry.upload_ref,
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
            self.fail(job, failure)
            return
        except Exception as exc:
            logger.exception("job %s: unexpected failure while delivering", job.id)
            self.fail(job, SakaiBotError(f"unexpected {type(exc).__name__}"))
            return
        self._step(job, JobState.DONE, started_s)
        job.finished_at_s = self._clock()
        self._store.update_job_soon(
            job.id,
            state=JobStates.DONE,
            delivered_message_id=message_id,
            uploading_s=job.timings_s.get(JobState.SENDING.value),
            finished_at_s=self._wall_clock(),
        )
        self._status.finish(job.id)
        self._on_outcome(JobOutcome.of_job(job, image_message_id=message_id))

    async def send_image(self, chat_id: str, outgoing: OutgoingImage, *, reply_to: int) -> int:
        """Send an image; a flood wait is waited out, up to the delivery budget."""
        waited_s = 0.0
        while True:
            try:
                return await self._chat.send_image(chat_id, outgoing, reply_to=reply_to)
            except FloodWait as exc:
                if waited_s + exc.retry_after_s > self._max_delivery_wait_s:
                    raise
                logger.warning(
                    "chat %s: flood wait of %.0f s before delivery", chat_id, exc.retry_after_s
                )
                waited_s += exc.retry_after_s
                await self._sleep(exc.retry_after_s)

    async def end_cancelled(self, job: Job) -> None:
        """End a job the user cancelled: written down, status removed.

        The job keeps its rate-limit slot (a cancel is the user's doing, see
        ``CHARGED_KINDS``). The bot answers the ``/image cancel`` itself.
        """
        job.finished_at_s = self._clock()
        cancelled = JobCancelled("cancelled by the user")
        # Waited for, so a restart does not bring the job back.
        await self._store.update_job(
            job.id,
            **ended(
                JobStates.CANCELLED,
                at_s=self._wall_clock(),
                refunded=False,
                kind=cancelled.kind,
                message=cancelled.user_message,
            ),
        )
        self._status.finish(job.id)
        self._on_outcome(
            JobOutcome.of_job(job, error_kind=cancelled.kind, error=cancelled.user_message)
        )

    def fail(self, job: Job, error: SakaiBotError) -> None:
        """End ``job`` with ``error``: refund when not the user's fault, tell the user."""
        if not job.state.finished:
            job.state = JobState.FAILED
        job.finished_at_s = self._clock()
        job.error_kind = error.kind
        refunded = error.kind not in CHARGED_KINDS and job.limiter_stamp is not None
        if refunded and job.limiter_stamp is not None:
            self._allowance.refund(job.user_id, job.limiter_stamp)
        self._store.update_job_soon(
            job.id,
            **ended(
                JobStates.CANCELLED if job.state is JobState.CANCELLED else JobStates.FAILED,
                at_s=self._wall_clock(),
                refunded=refunded,
                kind=error.kind,
                message=error.user_message,
            ),
        )
        logger.info("job %s (%s) failed: %s: %s", job.id, job.model.name, error.kind, error)
        message = error.user_message
        self._status.finish(job.id, final_text=failed_text(message))
        self._on_outcome(JobOutcome.of_job(job, error_kind=error.kind, error=message))

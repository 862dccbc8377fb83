"""Admission: the path of a new ``/image=`` request, from parsed command to queued job.

The chat's default flags (``/image set``) are merged in first, under the
request's own. Order (only accepted requests count against a user's allowance):
cache look-up → rate-limit check (the user's, then everyone's) → daily budget →
circuit breaker → queue bounds → queue the job → write it to the store → show
its place. A request refused after the rate-limit check gives its slot straight
back. An ``--n`` request (an album) counts N in every window and is refused
whole, up front, when N do not fit.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import replace

from sakaibot.breaker import Breakers, BreakerState
from sakaibot.cache import Cache
from sakaibot.chat.port import IncomingMessage
from sakaibot.commands import MAX_SEED, ImageRequest, with_defaults
from sakaibot.errors import (
    EveryoneRateLimited,
    JobIdTaken,
    ModelUnavailable,
    PausedUntilReset,
    RateLimited,
    RequestRejected,
    SakaiBotError,
    StoreUnavailable,
    UnknownModel,
)
from sakaibot.i18n import Texts, english_for
from sakaibot.jobs import Album, Job, JobIdFactory, job_record, random_seed
from sakaibot.limits import Allowance, Denial
from sakaibot.models import ModelRegistry, ModelSpec
from sakaibot.pipeline import JobPipeline, usable_fallback
from sakaibot.queues import JobQueues
from sakaibot.quota import DailyBudgets
from sakaibot.status import StatusScheduler, show_place
from sakaibot.store import Store

logger = logging.getLogger(__name__)
#: How many times a request draws new ids when a drawn one is already stored.
_ID_DRAWS = 3


class Admission:
    """Accepts (or refuses, by raising) new generation requests."""

    def __init__(
        self,
        *,
        registry: ModelRegistry,
        allowance: Allowance,
        breakers: Breakers,
        cache: Cache,
        queues: JobQueues,
        store: Store,
        status: StatusScheduler,
        pipeline: JobPipeline,
        clock: Callable[[], float],
        new_job_id: JobIdFactory,
        budgets: DailyBudgets,
        wall_clock: Callable[[], float],
        new_seed: Callable[[], int] = random_seed,
        texts_for: Callable[[str], Texts] = english_for,
    ) -> None:
        self._budgets = budgets
        self._wall_clock = wall_clock
        self._registry = registry
        self._allowance = allowance
        self._breakers = breakers
        self._cache = cache
        self._queues = queues
        self._store = store
        self._status = status
        self._pipeline = pipeline
        self._clock = clock
        self._new_job_id = new_job_id
        #: Seeds of an album's images when the request names none.
        self._new_seed = new_seed
        #: The language a chat is answered in, kept with each of its jobs.
        self._texts_for = texts_for

    async def admit(self, message: IncomingMessage, request: ImageRequest) -> None:
        """Queue ``request`` (or answer it from the cache); raises when it is refused.

        A drawn id that a stored job already has is found as the job is written
        (no look-up per job): that try is undone, unseen, and made again with new
        ids, a few times at most.
        """
        for _ in range(_ID_DRAWS - 1):
            try:
                await self._admit_once(message, request)
            except JobIdTaken as exc:
                logger.info("drew a job id already in use; drawing again (%s)", exc)
                continue
            return
        await self._admit_once(message, request)

    async def _admit_once(self, message: IncomingMessage, request: ImageRequest) -> None:
        model = self._registry.get(request.model)
        if model is None:  # the parser only returns configured models
            raise UnknownModel(request.model, self._registry.names())
        request = with_defaults(request, model, await self._store.chat_defaults(message.chat_id))
        if request.count > 1:
            await self._admit_album(message, request, model)
            return
        job_id = self._fresh_job_id()
        # A stored result skips the queue altogether: no worker is needed.
        hit = await self._cache.lookup(model, request)
        if hit is None:
            # In Redis mode other front ends count too: the check below sees their counts.
            await self._budgets.refresh()
        admitted = await self._allowance.admit(message.user_id)
        if isinstance(admitted, Denial):
            raise _rate_refusal(admitted)
        # From here to submit() nothing awaits: the checks and the queueing
        # happen as one step, so bounds and order are exact. A request refused
        # here gives its counted slot straight back (only accepted ones count).
        if hit is None:
            try:
                self._check_budget(model, request)
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
            texts=self._texts_for(message.chat_id),
        )
        job.limiter_stamp = admitted
        if hit is None:
            self._queues.submit(job)
        assert job.persisted is not None
        # The job is written down before the user is told it is queued.
        try:
            await self._store.add_job(job_record(job))
        except StoreUnavailable as exc:
            if not isinstance(exc, JobIdTaken):
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

    def _check_budget(self, model: ModelSpec, request: ImageRequest) -> None:
        """While a model is paused until 00:00 UTC, new requests hear when it comes back."""
        paused_until_s = self._budgets.paused_until_s(model.name)
        if paused_until_s is None:
            return
        self._refuse_while_paused(
            model,
            request,
            serving=lambda name: self._budgets.paused_until_s(name) is None,
            refusal=lambda other: PausedUntilReset(
                model.display_name, paused_until_s - self._wall_clock(), other
            ),
        )

    def _refuse_while_paused(
        self,
        model: ModelSpec,
        request: ImageRequest,
        *,
        serving: Callable[[str], bool],
        refusal: Callable[[str | None], SakaiBotError],
    ) -> None:
        """A request for a paused ``model`` goes to its usable fallback if that one is
        ``serving``; else it is refused, naming the configured fallback if it serves
        (a fallback this request's flags keep out is still worth naming)."""
        fallback = usable_fallback(model, request.options, self._registry)
        if fallback is not None and serving(fallback.name):
            return  # it will be made by the fallback
        other = self._registry.get(model.fallback) if model.fallback else None
        raise refusal(other.display_name if other is not None and serving(other.name) else None)

    async def _admit_album(
        self, message: IncomingMessage, request: ImageRequest, model: ModelSpec
    ) -> None:
        """``--n``: one job per image, counted, bounded and stored as one — or refused whole.

        Each image finds its own place in the model's queue, with its own seed;
        the cache is looked up per image when it starts (a seed repeated with
        ``--seed`` comes from the cache).
        """
        count, user_id = request.count, message.user_id
        taken: set[str] = set()
        album_id = self._fresh_job_id(taken)
        job_ids = [self._fresh_job_id(taken) for _ in range(count)]
        # In Redis mode other front ends count too: the check below sees their counts.
        await self._budgets.refresh()
        # All N count against the user's windows and everyone's, or none do.
        admitted = await self._allowance.admit(user_id, count)
        if isinstance(admitted, Denial):
            raise _rate_refusal(admitted, asked=count)
        # As for one image: nothing awaits from the checks to the last submit().
        # A model paused until 00:00 UTC refuses the album whole; otherwise each
        # image takes its part of the day's budget as it starts, like any job.
        try:
            self._check_budget(model, request)
            self._check_breaker(model, request)
            self._queues.check_admission(model.name, user_id, count)
        except RequestRejected:
            for _ in range(count):
                self._allowance.refund(user_id, admitted)
            raise
        album = Album(
            id=album_id,
            size=count,
            chat_id=message.chat_id,
            reply_to=message.message_id,
            user_id=user_id,
            model=model.name,
            texts=self._texts_for(message.chat_id),
        )
        loop = asyncio.get_running_loop()
        jobs = [
            Job(
                id=job_id,
                user_id=user_id,
                chat_id=message.chat_id,
                reply_to=message.message_id,
                request=self._variant(request, model, index),
                model=model,
                created_at_s=self._clock(),
                limiter_stamp=admitted,
                persisted=loop.create_future(),
                chat_address=message.chat_address,
                album=album,
                album_index=index,
                texts=album.texts,
            )
            for index, job_id in enumerate(job_ids)
        ]
        for job in jobs:
            self._queues.submit(job)
        try:
            await self._store.add_jobs([job_record(job) for job in jobs])
        except StoreUnavailable as exc:
            if not isinstance(exc, JobIdTaken):
                logger.error("album %s could not be stored: %s", album_id, exc)
            for job in jobs:
                assert job.persisted is not None
                job.persisted.set_result(False)
                self._allowance.refund(user_id, admitted)
                self._queues.withdraw(job)
            raise
        for job in jobs:
            assert job.persisted is not None
            job.persisted.set_result(True)
            self._queues.stored(job)
        for job in jobs:
            place = self._queues.place_of(job)
            if place is not None:
                show_place(self._status, job, place)
        logger.info("album %s queued: %d images of %s", album_id, count, model.name)

    def _variant(self, request: ImageRequest, model: ModelSpec, index: int) -> ImageRequest:
        """The request of an album's ``index``-th image: one image, its own seed.

        ``--seed S`` gives S, S+1, ... (so each can be asked for again); without
        it the seeds are drawn here, to be named in the caption. A model that
        takes no seed makes variations of its own, and they must not answer each
        other from the cache.
        """
        options = request.options
        if model.supports("seed"):
            base = options.seed
            seed = (base + index) % (MAX_SEED + 1) if base is not None else self._new_seed()
            options = replace(options, seed=seed)
        else:
            options = replace(options, fresh=True)
        return replace(request, options=options, count=1)

    def _check_breaker(self, model: ModelSpec, request: ImageRequest) -> None:
        """While a model is paused, new requests hear so at once (unless a fallback takes them)."""
        breaker = self._breakers.get(model.name)
        if breaker.state is not BreakerState.OPEN:
            return
        self._refuse_while_paused(
            model,
            request,
            serving=lambda name: self._breakers.get(name).state is BreakerState.CLOSED,
            refusal=lambda other: ModelUnavailable(
                model.display_name, breaker.retry_after_s(), other
            ),
        )

    def _fresh_job_id(self, taken: set[str] | None = None) -> str:
        """A job (or album) id no job, album or other id in ``taken`` has (then taken)."""
        while True:
            job_id = self._new_job_id()
            if taken is not None and job_id in taken:
                continue
            # Only this process's jobs are looked at here; the store refuses an id
            # a stored job has as the job is written (JobIdTaken), in the same commit.
            if self._queues.is_free_id(job_id):
                if taken is not None:
                    taken.add(job_id)
                return job_id


def _rate_refusal(denial: Denial, *, asked: int = 1) -> RateLimited:
    """The refusal a user hears for ``denial``: their own limit, or everyone's."""
    limited = EveryoneRateLimited if denial.everyone else RateLimited
    return limited(denial.retry_after_s, denial.window.limit, denial.window.window_s, asked=asked)

"""The app factory: the one place that builds and wires SakaiBot's objects.

Front ends hand in their chat port; everything else (limiter, queues, status
scheduler, pipeline, worker client, enhancer) is built here from the one
settings object. Tests pass their own generator, enhancer, clock or sleep.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

from pydantic import BaseModel, SecretStr

from sakaibot.admission import Admission
from sakaibot.bot import ImageBot
from sakaibot.breaker import Breakers, BreakerSettings
from sakaibot.cache import Cache, ResultCache
from sakaibot.chat.port import ChatPort
from sakaibot.commands import STATS_DEFAULT_DAYS
from sakaibot.enhance_ahead import EnhanceAhead
from sakaibot.enhancer import PromptEnhancer
from sakaibot.generation import ImageGenerator
from sakaibot.health import HealthCheck
from sakaibot.i18n import LANGUAGE_SETTING, Languages
from sakaibot.jobs import JobIdFactory, random_job_id
from sakaibot.limits import (
    Allowance,
    CombinedAllowance,
    LocalAllowance,
    RejectionPolicy,
    RejectionThrottle,
    SlidingWindowLimiter,
)
from sakaibot.models import ModelRegistry
from sakaibot.pipeline import JobOutcome, JobPipeline, OutcomeListener
from sakaibot.private_files import make_private_dir, tighten, write_private
from sakaibot.queues import JobQueues
from sakaibot.quota import DAY_S, DailyBudgets, LocalBudgets, budget_limits
from sakaibot.recovery import Recovery
from sakaibot.settings import Settings
from sakaibot.shared.allowance import SharedAllowance
from sakaibot.shared.budgets import SharedBudgets
from sakaibot.shared.cache import SharedResultCache
from sakaibot.shared.generator import RemoteGenerator
from sakaibot.shared.interfaces import SharedCacheStore
from sakaibot.shared.outage import OutageLog
from sakaibot.shared.worker import GenerationWorker
from sakaibot.status import (
    Sleep,
    StatusScheduler,
    restarting_text,
    show_place,
    status_text,
)
from sakaibot.stopping import stop_tasks
from sakaibot.store import JobRecord, Store
from sakaibot.store.images import ImageFiles
from sakaibot.store.sqlite import SqliteStore
from sakaibot.subcommands import Subcommands
from sakaibot.telemetry import NoTelemetry, Telemetry
from sakaibot.undelivered import UndeliveredImages

if TYPE_CHECKING:
    from sakaibot.enhancer.llm import LlmProvider
    from sakaibot.metrics import MetricsServer, PrometheusTelemetry

logger = logging.getLogger(__name__)

Closer = Callable[[], Awaitable[None]]

#: Longest the enhancer may make a prompt: flux-1-schnell takes up to 2048
#: characters and the style words still have to fit after it.
ENHANCED_PROMPT_MAX_CHARS = 1500


@dataclass(frozen=True)
class Sleeps:
    """How each component waits, so a test can hold one component's waits alone."""

    #: The status scheduler's pacing between edits.
    status: Sleep = asyncio.sleep
    #: The pipeline's waits: a paused model, a chat's flood wait.
    pipeline: Sleep = asyncio.sleep

    @classmethod
    def every(cls, sleep: Sleep) -> Sleeps:
        return cls(status=sleep, pipeline=sleep)


@dataclass
class App:
    """Everything one running bot is made of."""

    settings: Settings
    registry: ModelRegistry
    limiter: SlidingWindowLimiter
    queues: JobQueues
    status: StatusScheduler
    pipeline: JobPipeline
    bot: ImageBot
    store: Store
    recovery: Recovery
    languages: Languages
    budgets: DailyBudgets
    #: ``/metrics`` and ``/healthz`` when ``METRICS_PORT`` is set.
    metrics_server: MetricsServer | None = None
    _closers: list[Closer] = field(default_factory=list)
    #: Started before recovery: the shared queue and any local generation worker.
    _starters: list[Closer] = field(default_factory=list)
    #: Told first when stopping, all at once and without waiting: whatever waits
    #: on the shared queue ends by itself then, not only if a cancel is seen.
    _halts: list[Callable[[], None]] = field(default_factory=list)
    #: The longest a hard stop waits for one group of tasks to see their cancel.
    stop_wait_s: float = 5.0

    async def start(self) -> None:
        """Open the store, bring back rate windows and unfinished jobs, start the workers."""
        # A folder from an older version, or copied in, may be readable by others.
        await asyncio.to_thread(tighten, self.settings.sakaibot_data_dir)
        await self.store.open()
        self._closers.append(self.store.close)
        for start in self._starters:
            await start()
        retention_s = self.settings.history_retention_days * DAY_S
        pruned = await self.store.prune_jobs(self.recovery.wall_clock() - retention_s)
        if pruned:
            logger.info("store: %d job(s) past HISTORY_RETENTION_DAYS removed", pruned)
        # Before recovery: a recovered job's status is in its chat's language.
        self.languages.remember(await self.store.chat_settings(LANGUAGE_SETTING))
        await self.recovery.restore_limits()
        await self.recovery.restore_budgets()
        await self.recovery.resume_jobs()
        self.queues.start(self.pipeline.run)
        if self.metrics_server is not None:
            await self.metrics_server.start()
            self._closers.append(self.metrics_server.close)

    async def drain(self) -> None:
        """Finish every accepted job and flush every status message, then stop."""
        await self.queues.drain()
        await self.pipeline.drain()
        await self.status.drain()

    async def shutdown(self, grace_s: float) -> None:
        """A clean stop: running jobs get ``grace_s`` to finish and be delivered;
        waiting ones stay in the store (their users are told) and run after the
        next start. A job cut off by the grace period is generated again then."""
        for job in self.queues.close_waiting():
            self.status.show(
                job.status_key,
                chat_id=job.chat_id,
                reply_to=job.reply_to,
                text=status_text(job, restarting_text(job.texts)),
            )
        # Not asyncio.wait_for: after its timeout it would cancel the drain and
        # wait, without a deadline, for a job that might not see the cancel.
        draining = asyncio.create_task(self.drain(), name="shutdown-drain")
        await asyncio.wait({draining}, timeout=grace_s)
        if not draining.done():
            logger.warning("shutdown: jobs still running after %.0f s were abandoned", grace_s)
        await self.aclose()
        await stop_tasks([draining], timeout_s=self.stop_wait_s, what="shutdown")

    async def aclose(self) -> None:
        """Stop at once and release connections (after :meth:`drain` for a clean stop).

        Bounded: a task that does not see its cancel is left behind and named in a
        warning, never waited for."""
        for halt in self._halts:
            halt()
        await self.queues.stop(timeout_s=self.stop_wait_s)
        await self.pipeline.aclose()
        await self.status.aclose()
        for close in reversed(self._closers):
            await close()
        self._closers.clear()


def _frontend_id(data_dir: Path) -> str:
    """This front end's name on the shared queue, kept in its data folder so that
    answers still find it after a restart (one process per folder, by the store's lock)."""
    path = data_dir / "frontend-id"
    try:
        return path.read_text("utf-8").strip()
    except FileNotFoundError:
        make_private_dir(data_dir)
        name = f"frontend-{secrets.token_hex(6)}"
        write_private(path, name.encode())
        return name


@dataclass
class _Shared:
    """What a front end on Redis is made of besides the usual."""

    remote: RemoteGenerator
    allowance: Allowance
    backend: SharedCacheStore
    budgets: DailyBudgets
    halt: Callable[[], None]


def _build_shared(
    settings: Settings,
    registry: ModelRegistry,
    closers: list[Closer],
    starters: list[Closer],
    clock: Callable[[], float],
    worker_generator: ImageGenerator | None,
    wall_clock: Callable[[], float],
) -> _Shared:
    from sakaibot.shared.backend import RedisBackend

    assert settings.redis_url is not None
    backend = RedisBackend(
        settings.redis_url.get_secret_value(),
        prefix=settings.redis_prefix,
        cache_max_bytes=settings.redis_cache_max_bytes,
    )
    # One log of the outage for the whole process: at most a warning a second.
    outage = OutageLog(clock)
    remote = RemoteGenerator(
        backend,
        outage=outage,
        frontend_id="",
        # The bounds are shared by every front end: checked in Redis, in the same
        # step as the job is added, against every front end's jobs.
        max_waiting=settings.image_queue_max,
        max_pending=settings.image_user_max_pending,
    )
    stop_worker = asyncio.Event()
    worker_task: list[asyncio.Task[None]] = []
    worker: GenerationWorker | None = None
    if settings.redis_local_workers:
        worker = GenerationWorker(
            backend,
            registry,
            worker_generator or build_generator(settings, closers),
            lease_s=settings.redis_lease_s,
            outage=outage,
        )

    async def start() -> None:
        await backend.open()
        remote.frontend_id = await asyncio.to_thread(_frontend_id, settings.sakaibot_data_dir)
        await backend.open_answers(remote.frontend_id)
        remote.start()
        if worker is not None:
            worker_task.append(asyncio.create_task(worker.run(stop_worker), name="local-worker"))

    def halt() -> None:
        stop_worker.set()
        remote.halt()

    async def close() -> None:
        halt()
        # Lanes waiting for a job see the stop within a read's block time; one
        # generating is cancelled: its job stays pending in Redis and is taken
        # over by another worker (or this one after the restart).
        await stop_tasks(
            worker_task, timeout_s=_STOP_WAIT_S, told_s=_STOP_WAIT_S / 2, what="local worker"
        )
        await remote.aclose()
        await backend.close()

    starters.append(start)
    closers.append(close)
    allowance: Allowance = SharedAllowance(backend, settings.image_user_limits)
    if settings.image_global_limits:
        # All users' requests are one more key on the same shared windows.
        allowance = CombinedAllowance(
            allowance, SharedAllowance(backend, settings.image_global_limits)
        )
    # One Cloudflare account behind every front end: one count of its images a day.
    budgets = SharedBudgets(
        backend, budget_limits(registry), registry.names(), wall_clock, outage=outage
    )
    return _Shared(remote=remote, allowance=allowance, backend=backend, budgets=budgets, halt=halt)


#: The longest a stop waits for the local generation worker's lanes.
_STOP_WAIT_S = 5.0


def build_generator(settings: Settings, closers: list[Closer]) -> ImageGenerator:
    """The worker client for the configured workers (its HTTP client closes with ``closers``)."""
    from sakaibot.workers.client import WorkerClient, build_http_client

    http = build_http_client(
        connect_timeout_s=settings.worker_connect_timeout_s,
        read_timeout_s=settings.worker_read_timeout_s,
    )
    closers.append(http.aclose)
    return WorkerClient(
        http,
        max_image_bytes=settings.image_max_bytes,
        retry_budget_s=settings.worker_retry_budget_s,
        max_attempts=settings.worker_max_attempts,
        # Time to connect, then time for the worker to make and send the image:
        # a worker that trickles its body never trips the read timeout alone.
        attempt_timeout_s=settings.worker_connect_timeout_s + settings.worker_read_timeout_s,
    )


def configured_secrets(settings: Settings) -> list[str]:
    """Every secret value in ``settings`` (keys, hashes, sessions, the Redis
    password), wherever it sits, so outside text can be checked against them."""
    found: list[str] = []

    def collect(value: object) -> None:
        if isinstance(value, SecretStr):
            secret = value.get_secret_value()
            found.append(secret)
            if "://" in secret:  # a URL: its password alone is a secret too
                try:
                    password = urlsplit(secret).password
                except ValueError:
                    password = None
                if password:
                    found.append(unquote(password))
        elif isinstance(value, BaseModel):
            for name in type(value).model_fields:
                collect(getattr(value, name))
        elif isinstance(value, dict):
            for item in value.values():
                collect(item)
        elif isinstance(value, (list, tuple)):
            for item in value:
                collect(item)

    collect(settings)
    return [secret for secret in found if secret]


def llm_providers(settings: Settings) -> list[LlmProvider]:
    """The LLMs that improve prompts, first choice first; none when none is configured
    (and then the OpenAI SDK is never imported)."""
    if settings.llm_provider == "none" or (
        settings.openrouter_api_key is None
        and settings.gemini_api_key is None
        and settings.llm_dev_url is None
    ):
        return []
    from sakaibot.enhancer.llm import providers_from_settings

    return providers_from_settings(settings)


def _build_enhancer(settings: Settings, closers: list[Closer]) -> PromptEnhancer | None:
    providers = llm_providers(settings)
    if not providers:
        return None
    from sakaibot.enhancer.llm import LlmEnhancer

    enhancer = LlmEnhancer(
        providers,
        timeout_s=settings.enhancer_timeout_s,
        max_chars=ENHANCED_PROMPT_MAX_CHARS,
        secret_values=configured_secrets(settings),
    )
    closers.append(enhancer.aclose)
    return enhancer


def _same_interval(interval_s: float, chat_id: str) -> float:
    """STATUS_EDIT_INTERVAL_S, the same for every chat."""
    return interval_s


def _no_listener(outcome: JobOutcome) -> None:
    """Outcomes nobody listens to (the log has them)."""


def _always_connected() -> bool:
    """A front end with no connection to lose (the console)."""
    return True


def _draw_chart(records: list[JobRecord], now_s: float) -> bytes:
    # Imported here: matplotlib loads only when the owner asks for a chart.
    from sakaibot.charts import draw_day_chart

    return draw_day_chart(records, now_s)


def _build_metrics_server(
    settings: Settings,
    prometheus: PrometheusTelemetry,
    health: HealthCheck,
    queues: JobQueues,
    status: StatusScheduler,
    budgets: DailyBudgets,
    registry: ModelRegistry,
) -> MetricsServer:
    from sakaibot.metrics import LiveSources, MetricsServer

    assert settings.metrics_port is not None
    prometheus.watch(
        LiveSources(
            queue_loads=lambda: [
                (load.model.name, load.waiting, load.running) for load in queues.loads()
            ],
            budgets=lambda: budgets.uses(registry.names()),
            status_flood_waits=lambda: status.counters.flood_waits,
        )
    )
    return MetricsServer(
        prometheus.registry, health, host=settings.metrics_host, port=settings.metrics_port
    )


def build_app(
    settings: Settings,
    chat: ChatPort,
    *,
    on_outcome: OutcomeListener | None = None,
    generator: ImageGenerator | None = None,
    enhancer: PromptEnhancer | None = None,
    clock: Callable[[], float] = time.monotonic,
    wall_clock: Callable[[], float] = time.time,
    sleep: Sleep | Sleeps = asyncio.sleep,
    edit_interval_s: Callable[[str], float] | None = None,
    new_job_id: JobIdFactory = random_job_id,
    connected: Callable[[], bool] = _always_connected,
) -> App:
    """Wire a bot for ``chat`` from ``settings``.

    ``generator`` and ``enhancer`` are built from the settings unless given; with
    no LLM configured there is no enhancer and jobs skip that step. ``sleep`` is
    every component's, or each its own (:class:`Sleeps`). ``connected`` says
    whether the chat is connected (for ``/healthz``).
    """
    sleeps = sleep if isinstance(sleep, Sleeps) else Sleeps.every(sleep)
    closers: list[Closer] = []
    starters: list[Closer] = []
    registry = settings.model_registry()
    shared: _Shared | None = None
    if settings.redis_url is not None:
        shared = _build_shared(settings, registry, closers, starters, clock, generator, wall_clock)
        generator = shared.remote
        # The shared queue is where jobs wait their turn; this front end lets
        # up to REDIS_INFLIGHT_PER_MODEL of its own into it at once.
        registry = ModelRegistry(
            replace(model, concurrency=settings.redis_inflight_per_model) for model in registry
        )
    # Rate windows are wall-clock time: they are kept across restarts.
    limiter = SlidingWindowLimiter(settings.image_user_limits, wall_clock)
    store = SqliteStore(settings.sakaibot_data_dir / "sakaibot.db")
    images = ImageFiles(settings.sakaibot_data_dir / "images")
    local_cache = ResultCache(
        store,
        images,
        ttl_s=settings.cache_ttl_s,
        max_bytes=settings.cache_max_bytes,
        clock=wall_clock,
    )
    cache: Cache = local_cache
    if shared is not None:
        cache = SharedResultCache(
            shared.backend, local_cache, ttl_s=settings.cache_ttl_s, clock=wall_clock
        )
    if generator is None:
        generator = build_generator(settings, closers)
    if enhancer is None:
        enhancer = _build_enhancer(settings, closers)
    breakers = Breakers(
        BreakerSettings(
            failure_threshold=settings.breaker_failure_threshold,
            cooldown_s=settings.breaker_cooldown_s,
        ),
        clock,
    )
    status = StatusScheduler(
        chat,
        edit_interval_s=edit_interval_s or partial(_same_interval, settings.status_edit_interval_s),
        clock=clock,
        sleep=sleeps.status,
        # Kept so that after a restart the same status message is edited.
        on_message=lambda key, message_id: store.update_job_soon(key, status_message_id=message_id),
    )
    undelivered = None
    if settings.undelivered_retention_s > 0:  # 0 turns keeping off
        undelivered = UndeliveredImages(
            settings.sakaibot_data_dir / "undelivered",
            retention_s=settings.undelivered_retention_s,
            clock=wall_clock,
        )
    report = on_outcome or _no_listener
    languages = Languages(settings.bot_language)
    everyone_limiter: SlidingWindowLimiter | None = None
    if shared is not None:
        allowance: Allowance = shared.allowance
    else:
        allowance = LocalAllowance(limiter)
        if settings.image_global_limits:
            everyone_limiter = SlidingWindowLimiter(settings.image_global_limits, wall_clock)
            allowance = CombinedAllowance(allowance, LocalAllowance(everyone_limiter))
    budgets: DailyBudgets = (
        shared.budgets if shared is not None else LocalBudgets(budget_limits(registry), wall_clock)
    )
    telemetry: Telemetry = NoTelemetry()
    prometheus: PrometheusTelemetry | None = None
    if settings.metrics_port is not None:
        from sakaibot.metrics import PrometheusTelemetry

        telemetry = prometheus = PrometheusTelemetry()
    # In Redis mode too: a front end improves its jobs' prompts before they enter the shared queue.
    ahead = EnhanceAhead(enhancer, ahead=settings.enhance_ahead, status=status)
    queues = JobQueues(
        registry,
        max_waiting_per_model=settings.image_queue_max,
        max_pending_per_user=settings.image_user_max_pending,
        on_position=partial(show_place, status),
        clock=clock,
        watcher=ahead,
    )
    ahead.place_of = queues.place_of
    pipeline = JobPipeline(
        generator=generator,
        enhancer=enhancer,
        chat=chat,
        status=status,
        allowance=allowance,
        clock=clock,
        on_outcome=report,
        sleep=sleeps.pipeline,
        max_delivery_wait_s=settings.delivery_max_wait_s,
        undelivered=undelivered,
        store=store,
        images=images,
        wall_clock=wall_clock,
        cache=cache,
        breakers=breakers,
        registry=registry,
        ahead=ahead,
        queues=queues,
        texts_for=languages.for_chat,
        budgets=budgets,
        telemetry=telemetry,
    )
    if shared is not None:
        shared.remote.on_position = pipeline.show_shared_place
        shared.remote.user_of = queues.user_of
    admission = Admission(
        registry=registry,
        allowance=allowance,
        breakers=breakers,
        cache=cache,
        queues=queues,
        store=store,
        status=status,
        pipeline=pipeline,
        clock=clock,
        new_job_id=new_job_id,
        texts_for=languages.for_chat,
        budgets=budgets,
        wall_clock=wall_clock,
    )
    subcommands = Subcommands(
        registry=registry,
        chat=chat,
        queues=queues,
        status=status,
        pipeline=pipeline,
        admission=admission,
        store=store,
        cache=cache,
        images=images,
        undelivered=undelivered,
        remote=shared.remote if shared is not None else None,
        wall_clock=wall_clock,
        stats_days_default=STATS_DEFAULT_DAYS,
        max_per_request=settings.image_max_per_request,
        languages=languages,
        budgets=budgets,
        # Only with the dashboard on: the chart is the owner's view of the same numbers.
        draw_chart=_draw_chart,
    )
    bot = ImageBot(
        chat=chat,
        registry=registry,
        max_prompt_chars=settings.image_prompt_max_chars,
        max_per_request=settings.image_max_per_request,
        admission=admission,
        subcommands=subcommands,
        rejections=RejectionThrottle(
            RejectionPolicy(
                replies=settings.image_rejection_replies,
                window_s=settings.image_rejection_window_s,
            ),
            clock,
        ),
        on_outcome=report,
        languages=languages,
    )
    recovery = Recovery(
        store=store,
        images=images,
        registry=registry,
        limiter=limiter,
        queues=queues,
        status=status,
        pipeline=pipeline,
        chat=chat,
        clock=clock,
        wall_clock=wall_clock,
        texts_for=languages.for_chat,
        everyone_limiter=everyone_limiter,
        budgets=budgets,
    )
    metrics_server = None
    if prometheus is not None and settings.metrics_port is not None:
        metrics_server = _build_metrics_server(
            settings,
            prometheus,
            HealthCheck(
                connected=connected,
                store_writable=store.writable,
                registry=registry,
                breakers=breakers,
                budgets=budgets,
            ),
            queues,
            status,
            budgets,
            registry,
        )
    return App(
        settings=settings,
        registry=registry,
        limiter=limiter,
        queues=queues,
        status=status,
        pipeline=pipeline,
        bot=bot,
        store=store,
        recovery=recovery,
        languages=languages,
        budgets=budgets,
        metrics_server=metrics_server,
        _closers=closers,
        _starters=starters,
        _halts=[] if shared is None else [shared.halt],
    )

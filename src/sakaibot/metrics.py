"""The operator's dashboard: Prometheus ``/metrics`` and ``/healthz`` on a local port.

The only module that imports ``prometheus_client``. :class:`PrometheusTelemetry`
is the core's :class:`~sakaibot.telemetry.Telemetry`, counting into a registry
of its own (one per app, never the library's global one); what only exists
at the moment of a scrape (queue depth, budgets, paused models, status flood
waits) is read then by :class:`_LiveCollector`.

:class:`MetricsServer` is a deliberately small HTTP/1.1 server on
``asyncio.start_server``: two GET routes, one request per connection, a
bounded request head read under a timeout. It listens on 127.0.0.1 unless
``METRICS_HOST`` says otherwise.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric

from sakaibot.health import Health
from sakaibot.quota import BudgetUse

logger = logging.getLogger(__name__)

#: Bucket bounds (seconds) for the time a job waits and the time a worker takes.
WAIT_BUCKETS_S = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600)
GENERATE_BUCKETS_S = (1, 2.5, 5, 10, 20, 30, 60, 120, 300)
#: The longest request head (request line and headers) the server reads.
MAX_REQUEST_HEAD_BYTES = 8192
#: How long a client may take to send its request head.
REQUEST_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class LiveSources:
    """What is read at each scrape, handed in by the app factory."""

    #: ``(model, waiting, running)`` for every model.
    queue_loads: Callable[[], list[tuple[str, int, int]]]
    budgets: Callable[[], list[BudgetUse]]
    #: Flood waits met by status messages so far.
    status_flood_waits: Callable[[], int]


class PrometheusTelemetry:
    """Counts the core's events into ``registry`` (see :class:`~sakaibot.telemetry.Telemetry`)."""

    def __init__(self) -> None:
        # A registry of this app's own, never the library's global one: two apps
        # in one process (tests, a worker beside a front end) never mix counts.
        self.registry = registry = CollectorRegistry()
        self._jobs = Counter(
            "sakaibot_jobs",
            "Jobs ended, by model and outcome (delivered or the error's kind).",
            ["model", "outcome"],
            registry=registry,
        )
        self._waited = Histogram(
            "sakaibot_job_wait_seconds",
            "Time a job waited in its queue before its turn.",
            ["model"],
            buckets=WAIT_BUCKETS_S,
            registry=registry,
        )
        self._generating = Histogram(
            "sakaibot_job_generate_seconds",
            "Time the worker took to make a job's image.",
            ["model"],
            buckets=GENERATE_BUCKETS_S,
            registry=registry,
        )
        self._fallbacks = Counter(
            "sakaibot_enhancer_fallbacks",
            "Prompts sent unenhanced because the LLM did not help.",
            registry=registry,
        )
        self._cache_hits = Counter(
            "sakaibot_cache_hits",
            "Requests answered from the result cache.",
            ["model"],
            registry=registry,
        )
        #: Flood waits met while delivering (status ones are read at a scrape).
        self.delivery_flood_waits = 0

    def job_ended(
        self, model: str, outcome: str, *, waited_s: float | None, generating_s: float | None
    ) -> None:
        self._jobs.labels(model=model, outcome=outcome).inc()
        if waited_s is not None:
            self._waited.labels(model=model).observe(waited_s)
        if generating_s is not None:
            self._generating.labels(model=model).observe(generating_s)

    def enhancer_fallback(self) -> None:
        self._fallbacks.inc()

    def flood_wait(self) -> None:
        self.delivery_flood_waits += 1

    def cache_hit(self, model: str) -> None:
        self._cache_hits.labels(model=model).inc()

    def watch(self, sources: LiveSources) -> None:
        """Add what is read at each scrape."""
        self.registry.register(_LiveCollector(sources, self))


class _LiveCollector:
    """Queue depth, budgets, paused models and flood waits, read when scraped."""

    def __init__(self, sources: LiveSources, telemetry: PrometheusTelemetry) -> None:
        self._sources = sources
        self._telemetry = telemetry

    def collect(self) -> Iterable[Metric]:
        depth = GaugeMetricFamily(
            "sakaibot_queue_depth", "Jobs waiting or running now.", labels=["model", "state"]
        )
        for model, waiting, running in self._sources.queue_loads():
            depth.add_metric([model, "waiting"], waiting)
            depth.add_metric([model, "running"], running)
        yield depth
        used = GaugeMetricFamily(
            "sakaibot_budget_used", "Images made today (UTC) per model.", labels=["model"]
        )
        limit = GaugeMetricFamily(
            "sakaibot_budget_limit", "Each model's daily image budget.", labels=["model"]
        )
        paused = GaugeMetricFamily(
            "sakaibot_model_paused_until_reset",
            "1 while a model is paused until 00:00 UTC (budget or worker quota used up).",
            labels=["model"],
        )
        for use in self._sources.budgets():
            used.add_metric([use.model], use.used)
            if use.limit is not None:
                limit.add_metric([use.model], use.limit)
            paused.add_metric([use.model], 1 if use.paused else 0)
        yield used
        yield limit
        yield paused
        floods = CounterMetricFamily(
            "sakaibot_flood_waits", "Flood waits Telegram asked for.", labels=["where"]
        )
        floods.add_metric(["delivery"], self._telemetry.delivery_flood_waits)
        floods.add_metric(["status"], self._sources.status_flood_waits())
        yield floods


class MetricsServer:
    """Serves ``GET /metrics`` and ``GET /healthz`` until :meth:`close`."""

    def __init__(
        self,
        registry: CollectorRegistry,
        health: Callable[[], Awaitable[Health]],
        *,
        host: str,
        port: int,
    ) -> None:
        self._registry = registry
        self._health = health
        self._host = host
        self._port = port
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        """The port listened on (the one picked when 0 was asked for)."""
        assert self._server is not None, "not started"
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._serve, self._host, self._port, limit=MAX_REQUEST_HEAD_BYTES
        )
        logger.info("metrics: serving /metrics and /healthz on %s:%d", self._host, self.port)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT_S):
                head = await reader.readuntil(b"\r\n\r\n")
            status, content_type, body = await self._answer(head)
        except asyncio.LimitOverrunError:
            status, content_type, body = "431 Request Header Fields Too Large", "text/plain", b""
        except (asyncio.IncompleteReadError, TimeoutError):
            status, content_type, body = "400 Bad Request", "text/plain", b"bad request\n"
        except Exception:
            logger.exception("metrics: a request failed")
            status, content_type, body = "500 Internal Server Error", "text/plain", b"error\n"
        try:
            writer.write(
                f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode("ascii")
                + body
            )
            await writer.drain()
        except ConnectionError:
            pass  # the client left; nothing to tell it
        finally:
            writer.close()

    async def _answer(self, head: bytes) -> tuple[str, str, bytes]:
        method, _, rest = head.split(b"\r\n", 1)[0].decode("latin-1").partition(" ")
        path = rest.split(" ", 1)[0].split("?", 1)[0]
        if method != "GET":
            return "405 Method Not Allowed", "text/plain", b"only GET\n"
        if path == "/metrics":
            return "200 OK", CONTENT_TYPE_LATEST, generate_latest(self._registry)
        if path == "/healthz":
            health = await self._health()
            status = "200 OK" if health.ok else "503 Service Unavailable"
            return status, "application/json", json.dumps(health.to_json()).encode() + b"\n"
        return "404 Not Found", "text/plain", b"try /metrics or /healthz\n"

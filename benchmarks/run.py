"""SakaiBot's benchmark: the real pipeline against the development worker in its own process.

Run with ``make bench`` (full size; the figures go to ``out/benchmarks.md``, or with
``--report docs/benchmarks.md`` to the committed page) or ``python benchmarks/run.py
--smoke`` (tiny, what CI runs so the harness cannot rot). Benchmarks are not tests:
they measure and report; they do not assert targets. Progress goes to standard
error, the figures as JSON to standard output.

Scenarios
- throughput: N jobs from U users (each in a private chat), half flux half sdxl,
  worker latency L ms (``dev-worker --fast``), one generation at a time per model,
  limits off: efficiency (ideal time / actual time), bot CPU per job, status
  operations per job, store commits per job.
- floor: the same requests made, in the same run against the same worker, by a
  minimal httpx client and by a raw asyncio-streams client; the bot's efficiency
  is divided by theirs.
- utilisation: ten queued flux jobs, an 800 ms LLM, 1 s images, ``ENHANCE_AHEAD``
  0 and 2: the share of time the image worker is busy, from its first request
  to its last answer.
- CPU per job by component: the throughput scenario under cProfile; the event
  loop thread's own time grouped by module, other threads (the store, file
  writes) as one figure.
- accept cost: queueing one more job with 1,000, 10,000 and 100,000 waiting.
- memory: W jobs waiting at once; RSS after serving C different chats against its
  baseline (each in a fresh subprocess).
- start-up (``sakaibot --help``), a cache hit, and queue wait against load.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import io
import json
import os
import platform
import pstats
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BEARER = "bench-key"


def progress(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def dev_worker(latency_ms: int, *, llm_latency_ms: int = 0) -> Iterator[str]:
    """The development worker as a separate process, so its CPU is not the bot's."""
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sakaibot",
            "dev-worker",
            "--fast",
            "--port",
            str(port),
            "--latency-ms",
            str(latency_ms),
            "--llm-latency-ms",
            str(llm_latency_ms),
            "--api-key",
            BEARER,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError("the development worker did not start") from None
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)


def bench_settings(data_dir: Path, **values: Any) -> Any:
    from sakaibot.settings import load_settings

    defaults: dict[str, Any] = {
        "sakaibot_data_dir": data_dir,
        "llm_provider": "none",
        "image_user_limits": "off",
    }
    defaults.update(values)
    return load_settings(env_file=None, **defaults)


# -- throughput, and the floor under it -------------------------------------------


@dataclass
class ThroughputResult:
    jobs: int
    users: int
    latency_ms: int
    wall_s: float
    ideal_s: float
    efficiency: float
    cpu_ms_per_job: float
    loop_thread_cpu_ms_per_job: float
    status_ops_per_job: float
    commits_per_job: float
    delivered: int
    failed: int


def requests_for(jobs: int) -> list[tuple[str, str]]:
    """The benchmark's requests, in order: (model, prompt), half flux half sdxl."""
    return [("flux" if n % 2 == 0 else "sdxl", f"benchmark image number {n}") for n in range(jobs)]


async def run_throughput(
    base_url: str,
    *,
    jobs: int,
    users: int,
    latency_ms: int,
    profile: cProfile.Profile | None = None,
) -> ThroughputResult:
    from sakaibot.app import build_app
    from sakaibot.chat.console import ConsoleChat
    from sakaibot.chat.port import IncomingMessage
    from sakaibot.pipeline import JobOutcome
    from sakaibot.store.sqlite import SqliteStore

    scratch = tempfile.TemporaryDirectory(prefix="sakaibot-bench-")
    settings = bench_settings(
        Path(scratch.name) / "data",
        flux_worker_url=f"{base_url}/flux",
        sdxl_worker_url=f"{base_url}/sdxl",
        sdxl_api_key=BEARER,
        image_queue_max=jobs,
        image_user_max_pending=jobs,
    )
    outcomes: list[JobOutcome] = []
    with scratch as out_dir, io.StringIO() as sink:
        console = ConsoleChat(sink, out_dir=Path(out_dir), jsonl=True, echo_input=False)
        app = build_app(settings, console, on_outcome=outcomes.append)
        await app.start()
        # One job per model first, not measured: the first image loads Pillow's
        # plugins and the lazily imported modules; the figures are for the steady state.
        for n, model in enumerate(("flux", "sdxl")):
            await app.bot.handle(
                IncomingMessage("warmup", -1 - n, "warmup", f"/image={model}=warm up --raw")
            )
        while app.queues.live_job_count() or app.pipeline.delivering():
            await app.pipeline.drain()
            await asyncio.sleep(0)
        await app.status.drain()
        outcomes.clear()
        store = app.store
        commits_before = store.commits if isinstance(store, SqliteStore) else 0
        if profile is not None:
            profile.enable()
        cpu_start_s = time.process_time()
        thread_start_s = time.thread_time()
        wall_start_s = time.perf_counter()
        for n, (model, prompt) in enumerate(requests_for(jobs)):
            user = f"user{n % users}"
            # Each user talks in their own private chat, as on Telegram.
            await app.bot.handle(
                IncomingMessage(
                    chat_id=user,
                    message_id=n + 1,
                    user_id=user,
                    text=f"/image={model}={prompt} --raw",
                )
            )
        await app.drain()
        wall_s = time.perf_counter() - wall_start_s
        thread_s = time.thread_time() - thread_start_s
        cpu_s = time.process_time() - cpu_start_s
        if profile is not None:
            profile.disable()
        counters = app.status.counters
        await app.aclose()
        commits = (store.commits if isinstance(store, SqliteStore) else 0) - commits_before
    # One generation at a time per model, the models in parallel: the ideal is
    # the busier model's jobs back to back at the worker's latency.
    per_model = (jobs + 1) // 2
    ideal_s = per_model * latency_ms / 1000
    ok = sum(1 for o in outcomes if o.ok)
    return ThroughputResult(
        jobs=jobs,
        users=users,
        latency_ms=latency_ms,
        wall_s=wall_s,
        ideal_s=ideal_s,
        efficiency=ideal_s / wall_s if wall_s else 0.0,
        cpu_ms_per_job=cpu_s * 1000 / jobs,
        loop_thread_cpu_ms_per_job=thread_s * 1000 / jobs,
        status_ops_per_job=(counters.sends + counters.edits + counters.deletes) / jobs,
        commits_per_job=commits / jobs,
        delivered=ok,
        failed=len(outcomes) - ok,
    )


async def run_raw_httpx(base_url: str, *, jobs: int, latency_ms: int) -> dict[str, float]:
    """The same requests from a minimal httpx client: one at a time per model."""
    import httpx

    async with httpx.AsyncClient(timeout=30) as http:

        async def one_model(model: str) -> None:
            for name, prompt in requests_for(jobs):
                if name != model:
                    continue
                if model == "flux":
                    response = await http.get(f"{base_url}/flux", params={"prompt": prompt})
                else:
                    response = await http.post(
                        f"{base_url}/sdxl",
                        json={"prompt": prompt},
                        headers={"Authorization": f"Bearer {BEARER}"},
                    )
                response.raise_for_status()

        await one_model("flux")  # warm up the connection, as the bot's warm-up does
        started = time.perf_counter()
        cpu_started = time.process_time()
        await asyncio.gather(one_model("flux"), one_model("sdxl"))
        wall_s = time.perf_counter() - started
        cpu_s = time.process_time() - cpu_started
    ideal_s = (jobs + 1) // 2 * latency_ms / 1000
    return {"wall_s": wall_s, "efficiency": ideal_s / wall_s, "cpu_ms_per_job": cpu_s * 1000 / jobs}


async def run_raw_streams(base_url: str, *, jobs: int, latency_ms: int) -> dict[str, float]:
    """The same requests written by hand on asyncio streams, one kept-alive connection
    per model: what any client must wait for at least."""
    from urllib.parse import quote, urlsplit

    host_port = urlsplit(base_url).netloc
    host, port = host_port.split(":")

    async def exchange(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, model: str, prompt: str
    ) -> None:
        if model == "flux":
            head = f"GET /flux?prompt={quote(prompt)} HTTP/1.1\r\nHost: {host_port}\r\n\r\n"
            writer.write(head.encode())
        else:
            body = json.dumps({"prompt": prompt}).encode()
            head = (
                f"POST /sdxl HTTP/1.1\r\nHost: {host_port}\r\nAuthorization: Bearer {BEARER}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
            )
            writer.write(head.encode() + body)
        await writer.drain()
        status_line = await reader.readline()
        if b" 200 " not in status_line:
            raise RuntimeError(f"raw client: {status_line!r}")
        length = 0
        while (line := await reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            if name.strip().lower() == "content-length":
                length = int(value.strip())
        await reader.readexactly(length)

    async def one_model(model: str) -> None:
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            for name, prompt in requests_for(jobs):
                if name == model:
                    await exchange(reader, writer, model, prompt)
        finally:
            writer.close()
            await writer.wait_closed()

    started = time.perf_counter()
    cpu_started = time.process_time()
    await asyncio.gather(one_model("flux"), one_model("sdxl"))
    wall_s = time.perf_counter() - started
    cpu_s = time.process_time() - cpu_started
    ideal_s = (jobs + 1) // 2 * latency_ms / 1000
    return {"wall_s": wall_s, "efficiency": ideal_s / wall_s, "cpu_ms_per_job": cpu_s * 1000 / jobs}


# -- keeping the worker busy while the LLM thinks ----------------------------------


async def run_utilisation(
    base_url: str, *, ahead: int, jobs: int, image_ms: int, llm_ms: int
) -> dict[str, float]:
    """``jobs`` flux jobs queued at once, prompts improved by the stand-in LLM; how
    much of the time from the worker's first request to its last answer it was busy."""
    from sakaibot.app import Closer, build_app, build_generator
    from sakaibot.chat.console import ConsoleChat
    from sakaibot.chat.port import IncomingMessage
    from sakaibot.generation import GenerationParams, GenerationResult
    from sakaibot.models import ModelSpec

    scratch = tempfile.TemporaryDirectory(prefix="sakaibot-bench-")
    settings = bench_settings(
        Path(scratch.name) / "data",
        flux_worker_url=f"{base_url}/flux",
        llm_provider="openrouter",  # no key: the stand-in LLM at LLM_DEV_URL answers
        llm_dev_url=f"{base_url}/v1",
        enhance_ahead=ahead,
        image_queue_max=jobs,
        image_user_max_pending=jobs,
        cache_ttl_s=0,
    )
    closers: list[Closer] = []
    real = build_generator(settings, closers)
    busy: list[tuple[float, float]] = []

    class TimedGenerator:
        async def generate(self, model: ModelSpec, params: GenerationParams) -> GenerationResult:
            started = time.perf_counter()
            try:
                return await real.generate(model, params)
            finally:
                busy.append((started, time.perf_counter()))

    with scratch as out_dir, io.StringIO() as sink:
        console = ConsoleChat(sink, out_dir=Path(out_dir), jsonl=True, echo_input=False)
        app = build_app(settings, console, generator=TimedGenerator())
        await app.start()
        for n in range(jobs):
            await app.bot.handle(
                IncomingMessage(f"c{n}", n + 1, f"u{n}", f"/image=flux=a lighthouse number {n}")
            )
        await app.drain()
        await app.aclose()
        for close in closers:
            await close()
    span_s = max(end for _, end in busy) - min(start for start, _ in busy)
    busy_s = sum(end - start for start, end in busy)
    return {
        "enhance_ahead": float(ahead),
        "jobs": float(len(busy)),
        "span_s": span_s,
        "utilisation": busy_s / span_s if span_s else 0.0,
    }


# -- where the CPU goes --------------------------------------------------------------

#: Module prefixes and the component they are counted in, first match wins.
COMPONENTS: tuple[tuple[str, str], ...] = (
    ("sakaibot/workers", "worker client (sakaibot.workers)"),
    ("sakaibot/status", "status scheduler"),
    ("sakaibot/queues", "queues"),
    ("sakaibot/store", "store (loop side)"),
    ("sakaibot/chat", "console front end"),
    ("sakaibot/", "rest of sakaibot"),
    ("httpx", "httpx"),
    ("httpcore", "httpcore + h11"),
    ("h11", "httpcore + h11"),
    ("anyio", "anyio"),
    ("tenacity", "tenacity"),
    ("PIL", "Pillow"),
    ("asyncio", "asyncio"),
    ("selectors", "asyncio"),
    ("concurrent", "threads (handing work over)"),
    ("threading", "threads (handing work over)"),
    ("json", "json"),
)


def component_of(filename: str) -> str:
    if filename.startswith("~") or filename.startswith("<"):
        return "built-ins (C)"
    for prefix, component in COMPONENTS:
        if f"/{prefix}" in filename or filename.startswith(prefix):
            return component
    return "other Python"


def split_cpu(profile: cProfile.Profile, jobs: int) -> dict[str, float]:
    """The event loop thread's own CPU per job (ms), grouped by component."""
    stats = pstats.Stats(profile)
    totals: dict[str, float] = defaultdict(float)
    raw_stats: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    for (filename, _line, name), (_cc, _nc, tottime, _ct, _callers) in raw_stats.items():
        if "epoll" in name or "select.select" in name:
            continue  # the loop waiting for the worker: idle, not work
        totals[component_of(filename)] += tottime
    return dict(
        sorted(
            ((name, seconds * 1000 / jobs) for name, seconds in totals.items()),
            key=lambda item: -item[1],
        )
    )


# -- accept cost against depth ---------------------------------------------------------


def run_accept_cost(depths: tuple[int, ...], samples: int) -> dict[str, float]:
    """Microseconds to queue one more job (submit, stored, place) with ``depth`` waiting."""
    from sakaibot.commands import ImageOptions, ImageRequest
    from sakaibot.enhance_ahead import EnhanceAhead
    from sakaibot.jobs import Job
    from sakaibot.queues import JobQueues
    from sakaibot.settings import load_settings
    from sakaibot.status import StatusScheduler

    registry = load_settings(
        env_file=None, flux_worker_url="http://127.0.0.1:9/flux"
    ).model_registry()
    flux = registry.get("flux")
    assert flux is not None
    request = ImageRequest(model="flux", prompt="a fox", options=ImageOptions())

    class NoChat:
        async def send_text(self, *args: Any, **kwargs: Any) -> int:
            return 1

    results: dict[str, float] = {}

    async def measure(depth: int) -> float:
        status = StatusScheduler(NoChat(), edit_interval_s=lambda _: 3.0, clock=time.monotonic)  # type: ignore[arg-type]
        ahead = EnhanceAhead(None, ahead=2, status=status)
        queues = JobQueues(
            registry,
            max_waiting_per_model=depth + samples + 5,
            max_pending_per_user=depth + samples + 5,
            on_position=lambda job, place: None,
            clock=time.monotonic,
            watcher=ahead,
        )

        def job(n: int) -> Job:
            return Job(
                id=f"j{n}",
                user_id=f"u{n}",
                chat_id=f"c{n}",
                reply_to=n,
                request=request,
                model=flux,
                created_at_s=0.0,
            )

        for n in range(depth):
            queues.submit(job(n))
        # The best of five rounds: the machine may be shared, and the cost of one
        # accept is what is asked, not how busy the machine was meanwhile.
        # The garbage collector is paused meanwhile: a full collection costs in
        # proportion to every live object, whatever the queue does.
        rounds: list[float] = []
        per_round = max(1, samples // 5)
        gc.collect()
        gc.disable()
        try:
            for first in range(depth, depth + 5 * per_round, per_round):
                started = time.perf_counter()
                for n in range(first, first + per_round):
                    accepted = job(n)
                    queues.submit(accepted)
                    queues.stored(accepted)
                    queues.place_of(accepted)
                rounds.append((time.perf_counter() - started) / per_round * 1e6)
        finally:
            gc.enable()
        return min(rounds)

    for depth in depths:
        results[str(depth)] = asyncio.run(measure(depth))
    return results


# -- memory ----------------------------------------------------------------------------


def _rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        pages = int(statm.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


async def _serve_chats(chats: int) -> dict[str, float]:
    """Serve ``chats`` different chats one job each; RSS before and after."""
    from tests.support.fakes import FakeGenerator

    from sakaibot.app import build_app
    from sakaibot.chat.port import IncomingMessage

    class NullChat:
        """A chat that shows nothing and keeps nothing (a recording fake would grow)."""

        def __init__(self) -> None:
            self.last_id = 0

        def remember_chat(self, chat_id: str, address: str | None) -> None:
            pass

        async def send_text(self, chat_id: str, text: str, *, reply_to: int | None) -> int:
            self.last_id += 1
            return self.last_id

        async def edit_text(self, chat_id: str, message_id: int, text: str) -> None:
            pass

        async def delete_message(self, chat_id: str, message_id: int) -> None:
            pass

        async def send_image(self, chat_id: str, image: Any, *, reply_to: int | None) -> int:
            self.last_id += 1
            return self.last_id

        async def find_delivered(self, chat_id: str, *, reply_to: int, job_id: str) -> int | None:
            return None

    scratch = tempfile.TemporaryDirectory(prefix="sakaibot-bench-")
    settings = bench_settings(
        Path(scratch.name),
        flux_worker_url="http://127.0.0.1:9/flux",
        image_queue_max=chats + 10,
        image_user_max_pending=10,
        status_edit_interval_s=0.0,
    )
    app = build_app(settings, NullChat(), generator=FakeGenerator())  # type: ignore[arg-type]
    await app.start()

    async def serve(first: int, count: int) -> None:
        for n in range(first, first + count):
            await app.bot.handle(
                IncomingMessage(f"chat{n}", 1, f"user{n}", f"/image=flux=a fox number {n} --raw")
            )
            if n % 200 == 199:
                await app.pipeline.drain()
        while app.queues.live_job_count() or app.pipeline.delivering():
            await app.pipeline.drain()
            await asyncio.sleep(0.01)
        await app.status.drain()

    await serve(0, 200)  # warm: every module loaded, every pool filled
    gc.collect()
    baseline_mb = _rss_mb()
    await serve(200, chats)
    gc.collect()
    after_mb = _rss_mb()
    lanes = app.status.lane_count()
    await app.aclose()
    scratch.cleanup()
    return {
        "chats": float(chats),
        "baseline_mb": baseline_mb,
        "after_mb": after_mb,
        "growth_mb": after_mb - baseline_mb,
        "status_lanes_left": float(lanes),
    }


def in_subprocess(call: str) -> dict[str, Any]:
    code = (
        f"import asyncio, json, sys; sys.path.insert(0, {str(ROOT)!r}); "
        "from benchmarks import run; "
        f"print(json.dumps({call}))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def run_memory(waiting: int) -> dict[str, Any]:
    return in_subprocess(f"asyncio.run(run._fill_queue({waiting}))")


def run_chats_rss(chats: int) -> dict[str, Any]:
    return in_subprocess(f"asyncio.run(run._serve_chats({chats}))")


async def run_cache_hit(base_url: str, *, repeats: int) -> dict[str, float]:
    """Request → delivered for a result already in the cache (worker latency excluded)."""
    from sakaibot.app import build_app
    from sakaibot.chat.console import ConsoleChat
    from sakaibot.chat.port import IncomingMessage
    from sakaibot.pipeline import JobOutcome
    from sakaibot.settings import load_settings

    scratch = tempfile.TemporaryDirectory(prefix="sakaibot-bench-")
    settings = load_settings(
        env_file=None,
        sakaibot_data_dir=Path(scratch.name) / "data",
        flux_worker_url=f"{base_url}/flux",
        llm_provider="none",
        image_user_limits="off",
    )
    delivered = asyncio.Event()

    def on_outcome(outcome: JobOutcome) -> None:
        delivered.set()

    times_ms: list[float] = []
    with scratch as out_dir, io.StringIO() as sink:
        console = ConsoleChat(sink, out_dir=Path(out_dir), jsonl=True, echo_input=False)
        app = build_app(settings, console, on_outcome=on_outcome)
        await app.start()
        for n in range(repeats + 1):
            delivered.clear()
            started = time.perf_counter()
            await app.bot.handle(
                IncomingMessage("bench", n + 1, "user", "/image=flux=a cached red fox --raw")
            )
            await delivered.wait()
            if n:  # the first one fills the cache
                times_ms.append((time.perf_counter() - started) * 1000)
        await app.drain()
        await app.aclose()
    return {"median_ms": statistics.median(times_ms), "max_ms": max(times_ms)}


async def run_load_point(
    base_url: str, *, utilisation: float, latency_ms: int, duration_s: float
) -> dict[str, float]:
    """Requests for one model arriving at random (Poisson) at ``utilisation`` of its
    capacity; returns how long jobs waited in the queue."""
    import random

    from sakaibot.app import build_app
    from sakaibot.chat.console import ConsoleChat
    from sakaibot.chat.port import IncomingMessage
    from sakaibot.settings import load_settings

    scratch = tempfile.TemporaryDirectory(prefix="sakaibot-bench-")
    settings = load_settings(
        env_file=None,
        sakaibot_data_dir=Path(scratch.name) / "data",
        flux_worker_url=f"{base_url}/flux",
        llm_provider="none",
        image_user_limits="off",
        image_queue_max=10_000,
        image_user_max_pending=10_000,
        cache_ttl_s=0,
    )
    rng = random.Random(7)
    rate_per_s = utilisation * 1000 / latency_ms
    with scratch as out_dir, io.StringIO() as sink:
        console = ConsoleChat(sink, out_dir=Path(out_dir), jsonl=True, echo_input=False)
        app = build_app(settings, console)
        await app.start()
        started = time.perf_counter()
        n = 0
        while time.perf_counter() - started < duration_s:
            n += 1
            await app.bot.handle(
                IncomingMessage(f"c{n % 50}", n, f"u{n % 50}", f"/image=flux=load {n} --raw")
            )
            await asyncio.sleep(rng.expovariate(rate_per_s))
        await app.drain()
        records = await app.store.jobs_since(0)
        await app.aclose()
    waits = sorted(r.waited_s for r in records if r.waited_s is not None)
    return {
        "utilisation": utilisation,
        "jobs": float(len(waits)),
        "median_wait_s": statistics.median(waits),
        "p95_wait_s": waits[int(0.95 * (len(waits) - 1))],
    }


def plot_waits(points: list[dict[str, float]], path: Path) -> None:
    """Queue wait against load, drawn with Pillow (no plotting library needed)."""
    from PIL import Image, ImageDraw

    width, height, margin = 720, 420, 60
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    top = max(p["p95_wait_s"] for p in points) * 1.1 or 1.0

    def xy(utilisation: float, wait_s: float) -> tuple[float, float]:
        x = margin + utilisation * (width - 2 * margin)
        y = height - margin - wait_s / top * (height - 2 * margin)
        return x, y

    draw.line([xy(0, 0), xy(1, 0)], fill="black")
    draw.line([xy(0, 0), (margin, margin)], fill="black")
    for tick in (0.0, 0.25, 0.5, 0.75, 1.0):
        x, y = xy(tick, 0)
        draw.text((x - 10, y + 8), f"{tick:.2f}", fill="black")
    for fraction in (0.0, 0.5, 1.0):
        x, y = xy(0, top * fraction)
        draw.text((8, y - 6), f"{top * fraction * 1000:.0f} ms", fill="black")
    for key, colour in (("median_wait_s", "steelblue"), ("p95_wait_s", "firebrick")):
        line = [xy(p["utilisation"], p[key]) for p in points]
        draw.line(line, fill=colour, width=3)
        for x, y in line:
            draw.ellipse([x - 4, y - 4, x + 4, y + 4], fill=colour)
    draw.text((margin, 12), "Queue wait against load (one model, 20 ms per image)", fill="black")
    draw.text((width - 260, 32), "blue: median   red: 95th percentile", fill="black")
    draw.text((width // 2 - 80, height - 24), "utilisation of the model", fill="black")
    image.save(path)


def run_startup(repeats: int) -> dict[str, float]:
    times_s: list[float] = []
    for _ in range(repeats):
        started = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "sakaibot", "--help"], capture_output=True, check=True
        )
        times_s.append(time.perf_counter() - started)
    return {"median_s": statistics.median(times_s), "min_s": min(times_s)}


async def _fill_queue(waiting: int) -> dict[str, Any]:
    """Queue ``waiting`` jobs on a held worker and report the process's peak RSS."""
    scratch = tempfile.TemporaryDirectory(prefix="sakaibot-bench-")
    from tests.support.fakes import FakeEnhancer, FakeGenerator, RecordingChat

    from sakaibot.app import build_app
    from sakaibot.chat.port import IncomingMessage
    from sakaibot.settings import load_settings

    settings = load_settings(
        env_file=None,
        sakaibot_data_dir=Path(scratch.name),
        flux_worker_url="http://127.0.0.1:9/flux",
        llm_provider="none",
        image_user_limits="off",
        image_queue_max=waiting + 10,
        image_user_max_pending=waiting + 10,
    )
    generator = FakeGenerator(gate=asyncio.Event())
    chat = RecordingChat()
    app = build_app(settings, chat, generator=generator, enhancer=FakeEnhancer())
    await app.start()
    baseline_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for n in range(waiting):
        user = f"user{n % 1000}"
        await app.bot.handle(
            IncomingMessage(
                chat_id=user, message_id=n + 1, user_id=user, text=f"/image=flux=waiting job {n}"
            )
        )
    await app.status.drain()
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    queued = sum(load.waiting + load.running for load in app.queues.loads())
    await app.aclose()
    scratch.cleanup()
    return {"waiting": queued, "peak_rss_mb": peak_kb / 1024, "before_mb": baseline_kb / 1024}


def machine() -> str:
    return (
        f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}"
    )


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} / {five:.2f} / {fifteen:.2f}"


def met(ok: bool) -> str:
    return "met" if ok else "**not met**"


def write_report(path: Path, results: dict[str, Any]) -> None:
    t = results["throughput"]
    raw = results["floor"]
    m = results["memory"]
    r = results["chats_rss"]
    s = results["startup"]
    u0, u2 = results["utilisation"]
    accept = results["accept_us"]
    cpu_split = results["cpu_split_ms"]
    depths = list(accept)
    accept_ratio = accept[depths[-1]] / accept[depths[0]]
    bot_vs_httpx = t["efficiency"] / raw["httpx"]["efficiency"]
    bot_vs_streams = t["efficiency"] / raw["streams"]["efficiency"]
    lines = [
        "# Benchmarks",
        "",
        "Produced by `make bench` (`benchmarks/run.py --report docs/benchmarks.md`); not a",
        "test. The bot runs the real pipeline (app factory, bot, queues, status scheduler,",
        "pipeline, worker client over loopback HTTP, SQLite store, console chat port writing",
        "every image to disk) against `sakaibot dev-worker --fast` in a separate process.",
        "",
        f"Machine: {results['machine']}. Date: {results['date']}. Load average (1 / 5 / 15",
        f"min) at the start: {results['load_start']}; at the end: {results['load_end']}.",
        "The machine was shared with other work while this ran: wall-clock figures move",
        "with its load.",
        "",
        "## Against the targets (issue 14)",
        "",
        "| figure | scenario | result | target | |",
        "|---|---|---|---|---|",
        f"| worker busy, `ENHANCE_AHEAD=2` | {u2['jobs']:.0f} flux jobs queued at once, "
        f"LLM {results['llm_ms']} ms, images {results['image_ms']} ms; from the worker's first "
        f"request to its last answer | **{u2['utilisation']:.3f}** ({u2['span_s']:.1f} s) | "
        f"≥ 0.95 | {met(u2['utilisation'] >= 0.95)} |",
        f"| worker busy, `ENHANCE_AHEAD=0` (before) | same | {u0['utilisation']:.3f} "
        f"({u0['span_s']:.1f} s) | | |",
        f"| bot ÷ raw httpx client | {t['jobs']} jobs, worker latency {t['latency_ms']} ms, "
        f"same requests, same worker | **{bot_vs_httpx:.3f}** | ≥ 0.98 | "
        f"{met(bot_vs_httpx >= 0.98)} |",
        f"| bot ÷ raw asyncio-streams client | same | {bot_vs_streams:.3f} | | |",
        f"| CPU per job, bot process | throughput scenario, HTTP included | "
        f"**{t['cpu_ms_per_job']:.2f} ms** ({t['loop_thread_cpu_ms_per_job']:.2f} ms on the "
        f"event loop thread) | ≤ 3.5 ms | {met(t['cpu_ms_per_job'] <= 3.5)} |",
        f"| store commits per job | same | **{t['commits_per_job']:.2f}** | ≤ 2 | "
        f"{met(t['commits_per_job'] <= 2)} |",
        f"| accept cost, {depths[0]} → {depths[-1]} waiting | queue one more job "
        f"(submit, stored, place) | "
        + " → ".join(f"{accept[d]:.1f} µs" for d in depths)
        + f" (×{accept_ratio:.2f}) | flat | {met(accept_ratio <= 1.5)} |",
        f"| RSS after serving {r['chats']:.0f} different chats | one job per chat, against "
        f"the RSS after 200 | **+{r['growth_mb']:.1f} MB** ({r['baseline_mb']:.0f} → "
        f"{r['after_mb']:.0f} MB; {r['status_lanes_left']:.0f} status lanes left) | "
        f"≤ 10 MB | {met(r['growth_mb'] <= 10)} |",
        "",
        "## Throughput and the floor",
        "",
        "The same requests, in the same run, against the same development worker: one at a",
        "time per model, the two models in parallel. Efficiency is the ideal time (the",
        "busier model's images back to back at the worker's latency) over the actual time.",
        "",
        "| client | wall time | efficiency | CPU per job |",
        "|---|---|---|---|",
        f"| SakaiBot (the whole pipeline) | {t['wall_s']:.2f} s | {t['efficiency']:.3f} | "
        f"{t['cpu_ms_per_job']:.2f} ms |",
        f"| minimal httpx client | {raw['httpx']['wall_s']:.2f} s | "
        f"{raw['httpx']['efficiency']:.3f} | {raw['httpx']['cpu_ms_per_job']:.2f} ms |",
        f"| raw asyncio streams | {raw['streams']['wall_s']:.2f} s | "
        f"{raw['streams']['efficiency']:.3f} | {raw['streams']['cpu_ms_per_job']:.2f} ms |",
        "",
        f"Outcomes: {t['delivered']} delivered, {t['failed']} failed, from {t['users']} users "
        f"each in a private chat. Status operations (sends + edits + deletes) per job, over "
        f"those {t['users']} chats: {t['status_ops_per_job']:.2f}.",
        "",
        "## CPU per job by component",
        "",
        "The throughput scenario again, under cProfile (which slows it; the shares are what",
        "matters): the event loop thread's own time per job, by module. The store's thread",
        "and the image-file threads are not in it; the bot's total CPU per job is above.",
        "",
        "| component | ms per job |",
        "|---|---|",
        *[f"| {name} | {ms:.3f} |" for name, ms in cpu_split.items()],
        "",
        "## Reading the figures",
        "",
        "- Worker utilisation: with `ENHANCE_AHEAD=0` each Flux slot improves a prompt and",
        "  only then generates, so the worker waits for the LLM before every image. With",
        "  the default 2, the next two jobs' prompts are improved while one generates; only",
        "  the first job waits for its prompt, before the worker's first request.",
        "- Accept cost: the garbage collector is paused while it is measured (a full",
        "  collection costs in proportion to every live object, whatever the queue does),",
        "  and the best of five rounds is taken. What is left grows a little with the",
        "  depth because larger dictionaries miss the CPU caches more; nothing scans the",
        "  line. For comparison, the `list.index` a position used to cost is about 0.7 ms",
        "  at 100,000 waiting on this machine.",
        "- Commits: each job writes its record (waited for, before it is announced), then",
        '  "delivering" together with its cache entry; its status message id and its end',
        "  are held up to 250 ms and ride with the next commit. Figures a little above 2",
        "  are the held writes that found no commit to ride with.",
        "- CPU per job and the floor: the HTTP client (httpx, httpcore, h11, anyio) is the",
        "  largest part of the bot's CPU per job; the raw httpx client pays most of it too.",
        "  The rest is asyncio's scheduling, the thread hand-overs (the store, the kept",
        "  image with its `fsync`, the console's file) and the status and queue",
        "  bookkeeping. Under a load average above the core count the bot, which needs",
        "  more CPU per image than either raw client, loses more wall time to the other",
        "  work on the machine, which is why the ratios move from run to run.",
        "",
        "## Memory and start-up",
        "",
        "| figure | scenario | result | target (issue 5) |",
        "|---|---|---|---|",
        f"| peak memory with {m['waiting']} jobs waiting | limits and bounds raised | "
        f"**{m['peak_rss_mb']:.0f} MB** RSS | ≤ 150 MB |",
        f"| start-up: `sakaibot --help` | wall time, median of {results['startup_repeats']} | "
        f"**{s['median_s']:.2f} s** | ≤ 0.4 s |",
        f"| cache hit: request to delivered image | worker latency 1 s, the same request again "
        f"| **{results['cache_hit']['median_ms']:.1f} ms** median, "
        f"{results['cache_hit']['max_ms']:.1f} ms max | ≤ 50 ms |",
        "",
        "## Queue wait against load",
        "",
        "One model, requests arriving at random (Poisson) at a share of what the model can",
        f"do at {t['latency_ms']} ms per image; how long jobs waited before they started.",
        "",
        "![Queue wait against load](benchmarks-queue-wait.png)",
        "",
        "| utilisation | jobs | median wait | 95th percentile |",
        "|---|---|---|---|",
        *[
            f"| {p['utilisation']:.1f} | {p['jobs']:.0f} | {p['median_wait_s'] * 1000:.0f} ms "
            f"| {p['p95_wait_s'] * 1000:.0f} ms |"
            for p in results["load"]
        ],
        "",
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, no report")
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--users", type=int, default=100)
    parser.add_argument("--latency-ms", type=int, default=20)
    parser.add_argument("--waiting", type=int, default=10_000)
    parser.add_argument("--chats", type=int, default=10_000)
    parser.add_argument(
        "--report",
        type=Path,
        default=ROOT / "out" / "benchmarks.md",
        help="where to write the figures (default: out/benchmarks.md, not committed; "
        "docs/benchmarks.md updates the committed page)",
    )
    args = parser.parse_args()
    llm_ms, image_ms, utilisation_jobs = 800, 1000, 10
    depths: tuple[int, ...] = (1_000, 10_000, 100_000)
    if args.smoke:
        args.jobs, args.users, args.waiting, args.chats = 20, 5, 200, 200
        llm_ms, image_ms, utilisation_jobs = 40, 50, 3
        depths = (100, 1_000)
    sys.path.insert(0, str(ROOT))
    load_start = load_average()
    progress(f"load average {load_start}; throughput: {args.jobs} jobs at {args.latency_ms} ms")
    with dev_worker(args.latency_ms) as base_url:
        throughput = asyncio.run(
            run_throughput(base_url, jobs=args.jobs, users=args.users, latency_ms=args.latency_ms)
        )
        progress(f"bot efficiency {throughput.efficiency:.3f}; now the raw clients")
        floor = {
            "httpx": asyncio.run(
                run_raw_httpx(base_url, jobs=args.jobs, latency_ms=args.latency_ms)
            ),
            "streams": asyncio.run(
                run_raw_streams(base_url, jobs=args.jobs, latency_ms=args.latency_ms)
            ),
        }
        progress("CPU by component (cProfile)")
        profile = cProfile.Profile()
        profiled_jobs = max(20, args.jobs // 4)
        asyncio.run(
            run_throughput(
                base_url,
                jobs=profiled_jobs,
                users=args.users,
                latency_ms=args.latency_ms,
                profile=profile,
            )
        )
        cpu_split = split_cpu(profile, profiled_jobs)
    utilisation: list[dict[str, float]] = []
    with dev_worker(image_ms, llm_latency_ms=llm_ms) as base_url:
        for ahead in (0, 2):
            progress(
                f"utilisation: {utilisation_jobs} jobs, LLM {llm_ms} ms, images {image_ms} ms, "
                f"ENHANCE_AHEAD={ahead}"
            )
            utilisation.append(
                asyncio.run(
                    run_utilisation(
                        base_url,
                        ahead=ahead,
                        jobs=utilisation_jobs,
                        image_ms=image_ms,
                        llm_ms=llm_ms,
                    )
                )
            )
    progress(f"accept cost at {', '.join(map(str, depths))} waiting")
    accept = run_accept_cost(depths, samples=200 if args.smoke else 2000)
    progress("cache hit")
    with dev_worker(1000) as base_url:
        cache_hit = asyncio.run(run_cache_hit(base_url, repeats=3 if args.smoke else 20))
    load_points: list[dict[str, float]] = []
    with dev_worker(args.latency_ms) as base_url:
        levels = (0.5,) if args.smoke else (0.2, 0.4, 0.6, 0.8, 0.9)
        for level in levels:
            progress(f"queue wait at utilisation {level}")
            load_points.append(
                asyncio.run(
                    run_load_point(
                        base_url,
                        utilisation=level,
                        latency_ms=args.latency_ms,
                        duration_s=0.5 if args.smoke else 6.0,
                    )
                )
            )
    progress(f"memory: {args.waiting} waiting")
    memory = run_memory(args.waiting)
    progress(f"memory: serving {args.chats} different chats")
    chats_rss = run_chats_rss(args.chats)
    progress("start-up")
    results: dict[str, Any] = {
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d"),
        "load_start": load_start,
        "throughput": asdict(throughput),
        "floor": floor,
        "cpu_split_ms": cpu_split,
        "llm_ms": llm_ms,
        "image_ms": image_ms,
        "utilisation": utilisation,
        "accept_us": accept,
        "memory": memory,
        "chats_rss": chats_rss,
        "startup": run_startup(3 if args.smoke else 15),
        "startup_repeats": 3 if args.smoke else 15,
        "cache_hit": cache_hit,
        "load": load_points,
        "load_end": load_average(),
    }
    print(json.dumps(results, indent=2))
    if not args.smoke:
        plot_waits(load_points, args.report.with_name("benchmarks-queue-wait.png"))
        write_report(args.report, results)
        progress(f"wrote {args.report}")
    return 0 if throughput.failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())

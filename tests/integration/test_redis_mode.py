"""Several processes on one Redis: shared FIFOs, shared limits, workers that die.

Each "process" here is an app of its own (its own data folder and chat), as
separate front ends would be; they meet only in a real redis-server.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from uuid import uuid4

import pytest
from redis.asyncio import Redis

from sakaibot.app import App, build_app
from sakaibot.chat.port import IncomingMessage
from sakaibot.errors import QuotaExhausted
from sakaibot.models import ModelSpec
from sakaibot.pipeline import JobOutcome
from sakaibot.settings import load_settings
from sakaibot.shared.backend import RedisBackend
from sakaibot.shared.worker import GenerationWorker
from tests.support.fakes import (
    FakeEnhancer,
    FakeGenerator,
    RecordingChat,
    registry,
)
from tests.support.redis_server import RedisServer
from tests.support.waiting import RECHECK_S, app_work, until, until_ended


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with RedisServer(tmp_path_factory.mktemp("redis")) as server:
        yield server


def front_end(
    server: RedisServer,
    prefix: str,
    data_dir: Path,
    generator: FakeGenerator,
    wall_clock: Callable[[], float] = time.time,
    **extra: object,
) -> tuple[App, RecordingChat, list[JobOutcome]]:
    chat = RecordingChat()
    outcomes: list[JobOutcome] = []
    values: dict[str, object] = {
        "flux_worker_url": "http://127.0.0.1:9/flux",
        "sakaibot_data_dir": data_dir,
        "redis_url": server.url,
        "redis_prefix": prefix,
        "image_user_limits": "off",
        "status_edit_interval_s": 0,
        "cache_ttl_s": 0,
    }
    values.update(extra)
    app = build_app(
        load_settings(env_file=None, **values),
        chat,
        wall_clock=wall_clock,
        on_outcome=outcomes.append,
        generator=generator,  # what this front end's local worker generates with
        enhancer=FakeEnhancer(),
    )
    return app, chat, outcomes


async def say(app: App, message_id: int, text: str, user: str) -> None:
    await app.bot.handle(IncomingMessage("chat", message_id, user, text))


async def test_two_front_ends_share_one_queue_and_each_delivers_its_own(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    prefix = f"t-{uuid4().hex[:8]}"
    first, first_chat, first_outcomes = front_end(
        redis_server, prefix, tmp_path / "a", FakeGenerator()
    )
    # The second front end generates nothing itself: the first one's worker does.
    second_generator = FakeGenerator()
    second, second_chat, second_outcomes = front_end(
        redis_server, prefix, tmp_path / "b", second_generator, redis_local_workers=False
    )
    await first.start()
    await second.start()
    try:
        for n in range(1, 4):
            await say(first, n, f"/image=flux=from a {n}", user="ann")
            await say(second, n, f"/image=flux=from b {n}", user="bob")
        await until(
            lambda: len(first_outcomes) == 3 and len(second_outcomes) == 3,
            waiting_for="three images in each chat",
        )
    finally:
        await first.aclose()
        await second.aclose()
    assert all(o.ok for o in first_outcomes + second_outcomes)
    assert sorted(e.reply_to for e in first_chat.of_kind("image")) == [1, 2, 3]
    assert sorted(e.reply_to for e in second_chat.of_kind("image")) == [1, 2, 3]
    assert second_generator.calls == []
    # Each chat got its own images, not the other front end's.
    assert all("from b" in e.text for e in second_chat.of_kind("image"))
    assert all("from a" in e.text for e in first_chat.of_kind("image"))


async def test_limits_are_shared_between_front_ends(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    prefix = f"t-{uuid4().hex[:8]}"
    first, _, _ = front_end(
        redis_server, prefix, tmp_path / "a", FakeGenerator(), image_user_limits="2/1h"
    )
    second, second_chat, _ = front_end(
        redis_server, prefix, tmp_path / "b", FakeGenerator(), image_user_limits="2/1h"
    )
    await first.start()
    await second.start()
    try:
        await say(first, 1, "/image=flux=one", user="ann")
        await say(second, 1, "/image=flux=two", user="ann")
        await say(second, 2, "/image=flux=three", user="ann")
        [refusal] = [e.text for e in second_chat.of_kind("send") if e.reply_to == 2]
        assert refusal.startswith("❌ You have reached the limit of 2 images per 1 h.")
    finally:
        await first.aclose()
        await second.aclose()


async def test_a_worker_that_dies_mid_job_loses_nothing(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    prefix = f"t-{uuid4().hex[:8]}"
    app, chat, outcomes = front_end(
        redis_server, prefix, tmp_path / "a", FakeGenerator(), redis_local_workers=False
    )
    await app.start()
    backend = RedisBackend(redis_server.url, prefix=prefix)
    await backend.open()
    # A short lease: the take-over waits for the job's idle time by the Redis clock.
    doomed = GenerationWorker(backend, registry(), FakeGenerator(gate=asyncio.Event()), lease_s=0.3)
    stop = asyncio.Event()
    dying = asyncio.create_task(doomed.run(stop))
    try:
        await say(app, 1, "/image=flux=a fox", user="ann")
        await until(
            lambda: doomed.generator.running == 1,  # type: ignore[attr-defined]
            waiting_for="the doomed worker to take the job",
        )
        dying.cancel()  # the worker process dies with the job in hand
        await asyncio.gather(dying, return_exceptions=True)
        healthy = GenerationWorker(backend, registry(), FakeGenerator(), lease_s=0.3)
        working = asyncio.create_task(healthy.run(stop))
        await until(
            lambda: len(outcomes) == 1, waiting_for="the job's outcome", settle=app_work(app)
        )
        stop.set()
        await asyncio.wait_for(working, timeout=5)
    finally:
        await app.aclose()
        await backend.close()
    assert [o.ok for o in outcomes] == [True]
    assert len(chat.of_kind("image")) == 1


async def test_stopping_mid_generation_is_bounded_and_the_job_runs_after_the_restart(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    prefix = f"t-{uuid4().hex[:8]}"
    deaf = FakeGenerator(gate=asyncio.Event(), deaf=True)
    # A short lease: after the restart the job is taken over once idle that long.
    app, _, _ = front_end(redis_server, prefix, tmp_path / "a", deaf, redis_lease_s=0.5)
    restarted: App | None = None
    try:
        await app.start()
        await say(app, 1, "/image=flux=a fox", user="ann")
        await until(lambda: deaf.running == 1, waiting_for="the local worker to take the job")
        async with asyncio.timeout(15):  # never hangs, whatever the generation does
            await app.aclose()
        restarted, chat, outcomes = front_end(
            redis_server, prefix, tmp_path / "a", FakeGenerator(), redis_lease_s=0.5
        )
        await restarted.start()
        await until_ended(restarted, outcomes, 1, within_s=30)
    finally:
        deaf.gate.set()  # type: ignore[union-attr]
        if restarted is not None:
            await restarted.aclose()
    assert [o.ok for o in outcomes] == [True]
    assert [e.reply_to for e in chat.of_kind("image")] == [1]


def test_a_separate_worker_process_generates_for_the_console(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    import json
    import os
    import signal
    import subprocess
    import sys

    from sakaibot.devworker import DevWorker, DevWorkerConfig
    from sakaibot.settings import Settings

    with DevWorker(DevWorkerConfig(fast=True)) as worker_url:
        env = {k: v for k, v in os.environ.items() if k.lower() not in Settings.model_fields}
        env.update(
            {
                "REDIS_URL": redis_server.url,
                "REDIS_PREFIX": f"t-{uuid4().hex[:8]}",
                "FLUX_WORKER_URL": f"{worker_url}/flux",
                "LLM_PROVIDER": "none",
                "STATUS_EDIT_INTERVAL_S": "0",
                "SAKAIBOT_DATA_DIR": str(tmp_path / "worker-data"),
            }
        )
        worker = subprocess.Popen(
            [sys.executable, "-m", "sakaibot", "--env-file", "none", "worker"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert worker.stdout is not None
            assert worker.stdout.readline().startswith("SakaiBot worker ")
            chat_env = {
                **env,
                "REDIS_LOCAL_WORKERS": "false",
                "SAKAIBOT_DATA_DIR": str(tmp_path / "chat-data"),
            }
            done = subprocess.run(
                [sys.executable, "-m", "sakaibot", "--env-file", "none", "chat", "--jsonl",
                 "--out", str(tmp_path / "out")],
                input="/image=flux=a red fox\n/image=flux=a blue whale\n",
                capture_output=True,
                text=True,
                timeout=60,
                env=chat_env,
                check=False,
            )  # fmt: skip
        finally:
            worker.send_signal(signal.SIGINT)
            worker_out, worker_err = worker.communicate(timeout=30)
    assert done.returncode == 0, done.stderr
    results = [json.loads(line) for line in done.stdout.splitlines()]
    assert [r["ok"] for r in results if r["type"] == "result"] == [True, True]
    assert worker.returncode == 0, worker_err
    assert "Stopped after 2 image(s)." in worker_out


async def test_a_worker_process_stops_at_once_on_a_second_ctrl_c_and_its_job_is_taken_over(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    import os
    import signal
    import sys

    from sakaibot.devworker import DevWorker, DevWorkerConfig
    from sakaibot.generation import GenerationParams
    from sakaibot.settings import Settings
    from sakaibot.shared.generator import RemoteGenerator

    prefix = f"t-{uuid4().hex[:8]}"
    backend = RedisBackend(redis_server.url, prefix=prefix)
    await backend.open()
    await backend.open_answers("fe-t")
    remote = RemoteGenerator(backend, frontend_id="fe-t", max_waiting=10, max_pending=10)
    remote.start()
    stop = asyncio.Event()
    # An image that takes a minute: the worker still has it in hand when stopped.
    with DevWorker(DevWorkerConfig(fast=True, latency_ms=60_000)) as worker_url:
        env = {k: v for k, v in os.environ.items() if k.lower() not in Settings.model_fields}
        env.update(
            {
                "REDIS_URL": redis_server.url,
                "REDIS_PREFIX": prefix,
                "FLUX_WORKER_URL": f"{worker_url}/flux",
                "LLM_PROVIDER": "none",
                "SAKAIBOT_DATA_DIR": str(tmp_path / "worker-data"),
            }
        )
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "sakaibot", "--env-file", "none", "worker",
            env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        try:
            assert process.stdout is not None
            line = await asyncio.wait_for(process.stdout.readline(), 30)
            assert line.startswith(b"SakaiBot worker ")
            asked = asyncio.create_task(
                remote.generate(flux_model(), GenerationParams("a fox", request_id="j1"))
            )
            taken: list[int | None] = [None]

            async def look() -> None:
                taken[0] = await backend.position("flux", "j1")

            await until(lambda: taken[0] == 0, waiting_for="the worker to take the job",
                        settle=look, within_s=30)  # fmt: skip
            process.send_signal(signal.SIGINT)
            line = await asyncio.wait_for(process.stdout.readline(), 30)
            assert line == b"Stopping after the images in hand; Ctrl-C again to stop now.\n"
            process.send_signal(signal.SIGINT)
            out, err = await asyncio.wait_for(process.communicate(), 30)
        finally:
            if process.returncode is None:
                process.kill()
                await process.communicate()
    assert process.returncode == 0, err.decode()
    assert out.startswith(b"Stopped after 0 image(s); the ones in hand go to another worker")
    # Taken over by another worker once idle for its lease, and answered.
    healthy = GenerationWorker(backend, registry(), FakeGenerator(), lease_s=0.3)
    working = asyncio.create_task(healthy.run(stop))
    try:
        async with asyncio.timeout(30):
            result = await asked
    finally:
        stop.set()
        await asyncio.wait_for(working, timeout=10)
        await remote.aclose()
        await backend.close()
    assert result.success


def flux_model() -> ModelSpec:
    model = registry().get("flux")
    assert model is not None
    return model


async def test_redis_restarting_under_load_loses_nothing_acknowledged(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    # A Redis of its own: restarting it must not disturb the other tests.
    with RedisServer(tmp_path_factory.mktemp("redis-restart")) as server:
        prefix = f"t-{uuid4().hex[:8]}"
        generator = FakeGenerator(gate=asyncio.Event())
        app, chat, outcomes = front_end(server, prefix, tmp_path / "a", generator)
        await app.start()
        try:
            for n in range(1, 4):
                await say(app, n, f"/image=flux=fox {n}", user=f"u{n}")
            await until(lambda: generator.running == 1, waiting_for="the first job to start")
            server.restart()  # without persistence: every queued request is gone
            generator.gate.set()
            # The requests are asked again; every accepted job still gets its image.
            await until(
                lambda: len(outcomes) == 3,
                waiting_for="every accepted job to end",
                settle=app_work(app),
                within_s=15,
            )
        finally:
            await app.aclose()
    assert sorted((o.reply_to, o.ok) for o in outcomes) == [(1, True), (2, True), (3, True)]
    assert sorted(e.reply_to for e in chat.of_kind("image")) == [1, 2, 3]


async def test_front_ends_share_one_result_cache(redis_server: RedisServer, tmp_path: Path) -> None:
    prefix = f"t-{uuid4().hex[:8]}"
    generator = FakeGenerator()
    first, _, first_outcomes = front_end(
        redis_server, prefix, tmp_path / "a", generator, cache_ttl_s=3600
    )
    second, second_chat, second_outcomes = front_end(
        redis_server, prefix, tmp_path / "b", FakeGenerator(), cache_ttl_s=3600,
        redis_local_workers=False,
    )  # fmt: skip
    await first.start()
    await second.start()
    try:
        await say(first, 1, "/image=flux=a red fox", user="ann")
        await until(
            lambda: len(first_outcomes) == 1, waiting_for="ann's image", settle=app_work(first)
        )
        await say(second, 1, "/image=flux=A red  FOX", user="bob")
        await until(
            lambda: len(second_outcomes) == 1, waiting_for="bob's image", settle=app_work(second)
        )
    finally:
        await first.aclose()
        await second.aclose()
    assert len(generator.calls) == 1  # made once, for both front ends
    [image] = second_chat.of_kind("image")
    assert " · from cache" in image.text.split("\n")[0]


async def test_a_job_waiting_in_the_shared_queue_can_be_cancelled(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    prefix = f"t-{uuid4().hex[:8]}"
    generator = FakeGenerator(gate=asyncio.Event())
    app, chat, outcomes = front_end(redis_server, prefix, tmp_path / "a", generator)
    await app.start()
    try:
        await say(app, 1, "/image=flux=first", user="bob")
        await until(lambda: generator.running == 1, waiting_for="the first job to start")
        await say(app, 2, "/image=flux=second", user="ann")  # waits in the shared queue
        await until(
            lambda: any(e.reply_to == 2 for e in chat.of_kind("send")),
            waiting_for="the second job's status message",
            settle=app_work(app),
        )
        await say(app, 3, "/image cancel", user="ann")
        [reply] = [e.text for e in chat.events if e.reply_to == 3]
        assert reply.startswith("🚫 Cancelled job ")
        generator.gate.set()
        await until(
            lambda: len(outcomes) == 2, waiting_for="both jobs to end", settle=app_work(app)
        )
    finally:
        await app.aclose()
    assert sorted((o.reply_to, o.ok, o.error_kind) for o in outcomes) == [
        (1, True, None),
        (2, False, "cancelled"),
    ]
    assert [params.prompt for _, params in generator.calls] == ["enhanced: first"]


async def eventually(check: Callable[[], Awaitable[bool]], *, waiting_for: str) -> None:
    """Wait until ``check()`` holds in Redis, for at most 10 s."""
    try:
        async with asyncio.timeout(10):
            while True:
                if await check():
                    return
                await asyncio.sleep(RECHECK_S)
    except TimeoutError:
        raise AssertionError(f"waited 10 s for {waiting_for}; it did not happen") from None


async def test_the_queue_bound_holds_for_two_front_ends_together(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    prefix = f"t-{uuid4().hex[:8]}"
    # Nobody generates: every job handed over stays waiting in the shared queue.
    apps = [
        front_end(
            redis_server,
            prefix,
            tmp_path / name,
            FakeGenerator(),
            redis_local_workers=False,
            image_queue_max=2,
        )
        for name in ("a", "b")
    ]
    for app, _, _ in apps:
        await app.start()
    raw = Redis.from_url(redis_server.url)
    try:
        for n in range(1, 4):
            for index, (app, _, _) in enumerate(apps):
                await say(app, n, f"/image=flux=fox {n}", user=f"user-{index}-{n}")
        await until(
            lambda: sum(len(outcomes) for _, _, outcomes in apps) == 4,
            waiting_for="four refusals at hand-over",
        )
        waiting = await raw.xlen(f"{prefix}:queue:flux")
    finally:
        await raw.aclose()
        for app, _, _ in apps:
            await app.aclose()
    refusals = [o for _, _, outcomes in apps for o in outcomes]
    assert all(not o.ok and o.error_kind == "queue_full" for o in refusals)
    assert all(o.error and "queue is full (2 waiting)" in o.error for o in refusals)
    assert waiting == 2


async def test_a_users_pending_bound_counts_their_jobs_on_every_front_end(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    prefix = f"t-{uuid4().hex[:8]}"
    first, _, first_outcomes = front_end(
        redis_server, prefix, tmp_path / "a", FakeGenerator(),
        redis_local_workers=False, image_user_max_pending=2,
    )  # fmt: skip
    second, _, second_outcomes = front_end(
        redis_server, prefix, tmp_path / "b", FakeGenerator(),
        redis_local_workers=False, image_user_max_pending=2,
    )  # fmt: skip
    await first.start()
    await second.start()
    raw = Redis.from_url(redis_server.url)
    try:
        await say(first, 1, "/image=flux=one", user="ann")
        await say(first, 2, "/image=flux=two", user="ann")

        async def both_handed_over() -> bool:
            return await raw.get(f"{prefix}:pending:ann") == b"2"

        await eventually(both_handed_over, waiting_for="both of ann's jobs in the shared queue")
        await say(second, 1, "/image=flux=three", user="ann")
        await until(lambda: len(second_outcomes) == 1, waiting_for="the refusal at hand-over")
    finally:
        await raw.aclose()
        await first.aclose()
        await second.aclose()
    [refused] = second_outcomes
    assert refused.error_kind == "too_many_pending"
    assert refused.error is not None
    assert "You already have 2 images waiting or generating" in refused.error
    assert first_outcomes == []


async def test_rate_windows_hold_whatever_the_front_ends_clocks_say(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    prefix = f"t-{uuid4().hex[:8]}"
    now_s = time.time()
    # The wall clocks of these front ends are 90 s off, each its own way.
    behind, _, behind_outcomes = front_end(
        redis_server, prefix, tmp_path / "a", FakeGenerator(), image_user_limits="3/1m",
        wall_clock=lambda: now_s - 90,
    )  # fmt: skip
    ahead, ahead_chat, _ = front_end(
        redis_server, prefix, tmp_path / "b", FakeGenerator(), image_user_limits="3/1m",
        wall_clock=lambda: now_s + 90,
    )  # fmt: skip
    await behind.start()
    await ahead.start()
    try:
        for n in range(1, 4):
            await say(behind, n, f"/image=flux=fox {n}", user="ann")
        await say(ahead, 1, "/image=flux=one more", user="ann")
        [refusal] = [e.text for e in ahead_chat.of_kind("send") if e.reply_to == 1]
        # The three accepted jobs end before the stop, so the test asks about the
        # windows, not about stopping with jobs in a worker's hands.
        await until_ended(behind, behind_outcomes, 3, within_s=30.0)
    finally:
        await behind.aclose()
        await ahead.aclose()
    assert refusal.startswith("❌ You have reached the limit of 3 images per 1 min.")


async def test_front_ends_on_one_account_share_its_daily_budget(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    prefix = f"t-{uuid4().hex[:8]}"
    first, first_chat, first_outcomes = front_end(
        redis_server, prefix, tmp_path / "a", FakeGenerator(), flux_daily_budget=3
    )
    second, second_chat, second_outcomes = front_end(
        redis_server, prefix, tmp_path / "b", FakeGenerator(), flux_daily_budget=3
    )
    await first.start()
    await second.start()
    try:
        # Four requests at once, two on each front end: the budget has room for three.
        await say(first, 1, "/image=flux=one", user="ann")
        await say(second, 1, "/image=flux=two", user="bob")
        await say(first, 2, "/image=flux=three", user="cat")
        await say(second, 2, "/image=flux=four", user="dan")
        await until(
            lambda: len(first_outcomes) + len(second_outcomes) == 4,
            waiting_for="the four jobs to end",
        )
        outcomes = first_outcomes + second_outcomes
        assert sum(o.ok for o in outcomes) == 3
        [late] = [o for o in outcomes if not o.ok]
        assert late.error_kind == "paused_until_reset"
        assert late.error is not None
        assert "comes back at 00:00 UTC" in late.error
        assert len(first_chat.of_kind("image")) + len(second_chat.of_kind("image")) == 3
        # The next request on either front end hears it at once, in one line.
        await say(first, 3, "/image=flux=five", user="eve")
        [refusal] = [e.text for e in first_chat.of_kind("send") if e.reply_to == 3]
        assert refusal.startswith("❌ Flux has used up today's images; it comes back at 00:00 UTC")
        # Both front ends' stats show the shared count.
        assert [(u.used, u.limit) for u in second.budgets.uses(["flux"])] == [(3, 3)]
    finally:
        await first.aclose()
        await second.aclose()


async def test_the_quota_error_one_front_end_hears_pauses_the_model_for_all(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    prefix = f"t-{uuid4().hex[:8]}"
    out_of_quota = FakeGenerator(errors=[QuotaExhausted("3036: daily free allocation")])
    first, _, first_outcomes = front_end(redis_server, prefix, tmp_path / "a", out_of_quota)
    # The second front end has no worker of its own: only the first one's answers.
    second, second_chat, _ = front_end(
        redis_server, prefix, tmp_path / "b", FakeGenerator(), redis_local_workers=False
    )
    await first.start()
    await second.start()
    try:
        await say(first, 1, "/image=flux=one", user="ann")
        await until(lambda: len(first_outcomes) == 1, waiting_for="the quota error")
        assert first_outcomes[0].error_kind == "quota_exhausted"
        await say(second, 1, "/image=flux=two", user="bob")
        [refusal] = [e.text for e in second_chat.of_kind("send") if e.reply_to == 1]
        assert "comes back at 00:00 UTC" in refusal
        assert len(out_of_quota.calls) == 1
    finally:
        await first.aclose()
        await second.aclose()


def test_sakaibot_stats_shows_every_front_ends_budget_use(
    redis_server: RedisServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import io
    import json

    from sakaibot.cli import main

    prefix = f"t-{uuid4().hex[:8]}"

    async def another_front_end_makes_two() -> None:
        app, _, outcomes = front_end(
            redis_server, prefix, tmp_path / "a", FakeGenerator(), flux_daily_budget=5
        )
        # This front end only runs (its store is there); the other one makes two.
        idle, _, _ = front_end(redis_server, prefix, tmp_path / "b", FakeGenerator())
        await app.start()
        await idle.start()
        try:
            await say(app, 1, "/image=flux=one", user="ann")
            await say(app, 2, "/image=flux=two", user="bob")
            await until(lambda: len(outcomes) == 2, waiting_for="two images")
        finally:
            await app.aclose()
            await idle.aclose()

    asyncio.run(another_front_end_makes_two())
    for name, value in {
        "FLUX_WORKER_URL": "http://127.0.0.1:9/flux",
        "FLUX_DAILY_BUDGET": "5",
        "REDIS_URL": redis_server.url,
        "REDIS_PREFIX": prefix,
        "SAKAIBOT_DATA_DIR": str(tmp_path / "b"),
    }.items():
        monkeypatch.setenv(name, value)
    out = io.StringIO()
    assert main(["--env-file", "none", "stats", "--json"], out=out) == 0
    [flux] = json.loads(out.getvalue())["budgets"]
    assert (flux["model"], flux["used"], flux["limit"]) == ("flux", 2, 5)

"""The pipeline with a circuit breaker: pause a failing model, tell people once, probe, recover."""

from __future__ import annotations

import asyncio
import re

from sakaibot.app import App, Sleeps, build_app
from sakaibot.chat.port import IncomingMessage
from sakaibot.errors import ContentFiltered, WorkerGaveUp
from sakaibot.pipeline import JobOutcome
from sakaibot.settings import load_settings
from tests.support.fakes import FakeClock, FakeEnhancer, FakeGenerator, RecordingChat
from tests.support.waiting import app_work, until, until_ended

GAVE_UP = WorkerGaveUp("503 503 503", model="Flux", attempts=3)


def make_app(
    generator: FakeGenerator,
    clock: FakeClock,
    chat: RecordingChat,
    *,
    sleeps: Sleeps | None = None,
    **extra: object,
) -> tuple[App, list[JobOutcome]]:
    outcomes: list[JobOutcome] = []
    values: dict[str, object] = {
        "flux_worker_url": "http://127.0.0.1:9/flux",
        "sdxl_worker_url": "http://127.0.0.1:9/sdxl",
        "sdxl_api_key": "k",
        "image_user_limits": "off",
        "image_user_max_pending": 20,
        "breaker_failure_threshold": 3,
        "breaker_cooldown_s": 60,
        "status_edit_interval_s": 0,
        "cache_ttl_s": 0,
    }
    values.update(extra)
    app = build_app(
        load_settings(env_file=None, **values),
        chat,
        on_outcome=outcomes.append,
        generator=generator,
        enhancer=FakeEnhancer(),
        clock=clock,
        wall_clock=clock,
        sleep=sleeps or clock.sleep,
    )
    return app, outcomes


def held_pauses(clock: FakeClock) -> tuple[Sleeps, asyncio.Event]:
    """Sleeps whose pipeline waits (a paused model) last until the test sets the event."""
    release = asyncio.Event()

    async def held_sleep(seconds: float) -> None:
        await release.wait()
        await clock.sleep(seconds)

    return Sleeps(status=clock.sleep, pipeline=held_sleep), release


async def say(app: App, message_id: int, text: str, user: str = "ann") -> None:
    await app.bot.handle(IncomingMessage("chat", message_id, f"{user}{message_id}", text))


async def test_a_failing_model_is_paused_then_probed_back() -> None:
    clock = FakeClock()
    chat = RecordingChat(clock=clock)
    generator = FakeGenerator(errors=[GAVE_UP, GAVE_UP, GAVE_UP])
    sleeps, cooldown_over = held_pauses(clock)
    app, outcomes = make_app(generator, clock, chat, sleeps=sleeps)
    await app.start()
    try:
        generator.gate = asyncio.Event()  # all four are in line before the first fails
        for n in range(1, 5):
            await say(app, n, f"/image=flux=fox {n}")
        generator.gate.set()
        await until_ended(app, outcomes, 3)
        # The fourth job waits for the model, and its status says so once.
        await until(
            lambda: any(text.startswith("⏸") for text in chat.visible_texts()),
            waiting_for="the paused message in the fourth job's status",
            settle=app_work(app),
        )
        assert sum(text.startswith("⏸") for text in chat.visible_texts()) == 1
        # A new request hears at once that the model is paused.
        await say(app, 5, "/image=flux=fox 5")
        [refusal] = [e.text for e in chat.events if e.reply_to == 5]
        assert re.fullmatch(
            r"❌ The Flux worker is failing right now, so new Flux images are paused for "
            r"about (1 min|[1-5]?[0-9] s)\. "
            r"Try again then, or use another model \(/image models\)\.",
            refusal,
        )
        # Other models are not affected.
        await say(app, 6, "/image=sdxl=a lighthouse")
        cooldown_over.set()  # the cool-down passes; the waiting job is the probe
        await until_ended(app, outcomes, 6)
        assert sorted((o.reply_to, o.ok, o.error_kind) for o in outcomes) == [
            (1, False, "worker_unavailable"),
            (2, False, "worker_unavailable"),
            (3, False, "worker_unavailable"),
            (4, True, None),
            (5, False, "model_unavailable"),
            (6, True, None),
        ]
        # The probe closed the breaker: new flux requests are taken again.
        await say(app, 7, "/image=flux=fox 7")
        await until_ended(app, outcomes, 7)
        assert outcomes[-1].ok is True
    finally:
        await app.aclose()


async def test_failures_that_are_not_the_workers_fault_do_not_pause_it() -> None:
    clock = FakeClock()
    chat = RecordingChat(clock=clock)
    filtered = ContentFiltered("nsfw", model="Flux")
    generator = FakeGenerator(errors=[filtered, filtered, filtered, filtered])
    app, outcomes = make_app(generator, clock, chat)
    await app.start()
    try:
        for n in range(1, 6):
            await say(app, n, f"/image=flux=fox {n}")
        await until_ended(app, outcomes, 5)
        assert [o.ok for o in outcomes] == [False] * 4 + [True]
        assert not any(text.startswith("⏸") for text in chat.visible_texts())
    finally:
        await app.aclose()


async def test_a_fallback_model_takes_over_while_paused() -> None:
    clock = FakeClock()
    chat = RecordingChat(clock=clock)
    generator = FakeGenerator(errors=[GAVE_UP, GAVE_UP, GAVE_UP])
    sleeps, _ = held_pauses(clock)
    app, outcomes = make_app(generator, clock, chat, sleeps=sleeps, flux_fallback="sdxl")
    await app.start()
    try:
        generator.gate = asyncio.Event()
        for n in range(1, 4):
            await say(app, n, f"/image=flux=fox {n}")
        generator.gate.set()
        await until_ended(app, outcomes, 3)
        await say(app, 4, "/image=flux=fox 4")  # taken: the fallback will make it
        await until_ended(app, outcomes, 4)
        assert outcomes[-1].ok is True
        [image] = chat.of_kind("image")
        assert image.text.startswith("🎨 SDXL (fallback for Flux) · prompt:")
        assert generator.calls[-1][0] == "sdxl"
    finally:
        await app.aclose()


async def test_a_fallback_image_is_not_cached_as_the_asked_models() -> None:
    clock = FakeClock()
    chat = RecordingChat(clock=clock)
    generator = FakeGenerator(errors=[GAVE_UP, GAVE_UP, GAVE_UP])
    sleeps, _ = held_pauses(clock)
    app, outcomes = make_app(
        generator, clock, chat, sleeps=sleeps, flux_fallback="sdxl", cache_ttl_s=3600
    )
    await app.start()
    try:
        generator.gate = asyncio.Event()
        for n in range(1, 4):
            await say(app, n, f"/image=flux=fox {n}")
        generator.gate.set()
        await until_ended(app, outcomes, 3)
        await say(app, 4, "/image=flux=a fox made by sdxl")
        await until_ended(app, outcomes, 4)
        assert generator.calls[-1][0] == "sdxl"
        assert await app.store.cache_entries() == []
    finally:
        await app.aclose()

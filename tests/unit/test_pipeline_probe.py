"""The half-open probe is given back however it ends, so a paused model never waits for ever.

Kept apart from ``test_pipeline.py``: these tests drive a probe that is
cancelled (possible with the shared queue) or dies of an unexpected error.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from sakaibot.app import App, build_app
from sakaibot.chat.port import IncomingMessage
from sakaibot.errors import JobCancelled, SakaiBotError, WorkerGaveUp
from sakaibot.generation import GenerationParams, GenerationResult
from sakaibot.models import ModelSpec
from sakaibot.pipeline import JobOutcome
from sakaibot.settings import load_settings
from tests.support.fakes import FakeClock, RecordingChat, tiny_image

GAVE_UP = WorkerGaveUp("503 503 503", model="Flux", attempts=3)
COOLDOWN_S = 60.0


@dataclass
class ScriptedGenerator:
    """Answers each call from a script: an error to return, an exception to raise, or an image."""

    script: list[SakaiBotError | Exception | None] = field(default_factory=list)
    calls: int = 0

    async def generate(self, model: ModelSpec, params: GenerationParams) -> GenerationResult:
        self.calls += 1
        step = self.script.pop(0) if self.script else None
        if isinstance(step, SakaiBotError):
            return GenerationResult(False, None, step)
        if step is not None:
            raise step
        return GenerationResult(True, tiny_image(), None)


class Outcomes:
    """The outcomes so far, and a way to wait (bounded in seconds) for the n-th."""

    def __init__(self) -> None:
        self.seen: list[JobOutcome] = []
        self._changed = asyncio.Event()

    def __call__(self, outcome: JobOutcome) -> None:
        self.seen.append(outcome)
        self._changed.set()

    async def wait_for(self, count: int) -> None:
        async with asyncio.timeout(10):
            while len(self.seen) < count:
                self._changed.clear()
                await self._changed.wait()


def make_app(
    generator: ScriptedGenerator, clock: FakeClock, *, lanes: int = 1
) -> tuple[App, Outcomes]:
    outcomes = Outcomes()
    settings = load_settings(
        env_file=None,
        flux_worker_url="http://127.0.0.1:9/flux",
        flux_concurrency=lanes,
        image_user_limits="off",
        image_user_max_pending=20,
        breaker_failure_threshold=3,
        breaker_cooldown_s=COOLDOWN_S,
        status_edit_interval_s=0,
        cache_ttl_s=0,
        llm_provider="none",
    )
    app = build_app(
        settings,
        RecordingChat(clock=clock),
        on_outcome=outcomes,
        generator=generator,
        clock=clock,
        wall_clock=clock,
        sleep=clock.sleep,
    )
    return app, outcomes


async def say(app: App, message_id: int, text: str) -> None:
    await app.bot.handle(IncomingMessage("chat", message_id, f"user{message_id}", text))


async def pause_flux_then_probe(app: App, outcomes: Outcomes, clock: FakeClock) -> None:
    """Three failures pause flux; after the cool-down, job 4 is the probe."""
    for n in range(1, 4):
        await say(app, n, f"/image=flux=fox {n}")
        await outcomes.wait_for(n)
    assert [o.error_kind for o in outcomes.seen] == ["worker_unavailable"] * 3
    clock.advance(COOLDOWN_S + 1)
    await say(app, 4, "/image=flux=the probe")
    await outcomes.wait_for(4)


async def test_a_cancelled_probe_lets_the_next_job_run() -> None:
    clock = FakeClock()
    # The shared queue answers "cancelled" when /image cancel took the probe back.
    cancelled = JobCancelled("cancelled while waiting in the shared queue")
    generator = ScriptedGenerator([GAVE_UP, GAVE_UP, GAVE_UP, cancelled])
    app, outcomes = make_app(generator, clock)
    await app.start()
    try:
        await pause_flux_then_probe(app, outcomes, clock)
        assert outcomes.seen[3].error_kind == "cancelled"
        await say(app, 5, "/image=flux=after the probe")
        await outcomes.wait_for(5)
        assert outcomes.seen[4].ok, outcomes.seen[4]
        assert generator.calls == 5
    finally:
        await app.aclose()


async def test_a_probe_that_raises_lets_the_next_job_run() -> None:
    clock = FakeClock()
    boom = RuntimeError("a bug in the worker client")
    generator = ScriptedGenerator([GAVE_UP, GAVE_UP, GAVE_UP, boom])
    app, outcomes = make_app(generator, clock)
    await app.start()
    try:
        await pause_flux_then_probe(app, outcomes, clock)
        assert (
            outcomes.seen[3].error
            == "Something went wrong on our side. Please try again in a minute."
        )
        await say(app, 5, "/image=flux=after the probe")
        await outcomes.wait_for(5)
        assert outcomes.seen[4].ok, outcomes.seen[4]
    finally:
        await app.aclose()


async def test_a_probe_whose_task_is_cancelled_lets_the_next_job_run() -> None:
    clock = FakeClock()
    generator = ScriptedGenerator([GAVE_UP, GAVE_UP, GAVE_UP, asyncio.CancelledError()])
    # Two lanes: the cancelled probe takes its lane down with it, the other takes job 5.
    app, outcomes = make_app(generator, clock, lanes=2)
    await app.start()
    try:
        for n in range(1, 4):
            await say(app, n, f"/image=flux=fox {n}")
            await outcomes.wait_for(n)
        clock.advance(COOLDOWN_S + 1)
        # The probe's task is cancelled under it: it ends with no outcome at all.
        await say(app, 4, "/image=flux=the probe")
        await say(app, 5, "/image=flux=after the probe")
        await outcomes.wait_for(4)
        assert outcomes.seen[3].reply_to == 5
        assert outcomes.seen[3].ok, outcomes.seen[3]
    finally:
        await app.aclose()

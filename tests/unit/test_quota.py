"""The quota guard: all users' windows, daily budgets paused until 00:00 UTC."""

from __future__ import annotations

import asyncio
import io
import itertools
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import pytest

from sakaibot.app import App, build_app
from sakaibot.chat.port import IncomingMessage
from sakaibot.cli import main
from sakaibot.errors import QuotaExhausted
from sakaibot.pipeline import JobOutcome
from sakaibot.quota import DAY_S, LocalBudgets, next_reset_s
from sakaibot.settings import load_settings
from tests.support.fakes import FakeClock, FakeEnhancer, FakeGenerator, RecordingChat
from tests.support.waiting import until_idle

#: 2025-01-01 21:00 UTC: three hours before a reset.
EVENING_S = 20_089 * DAY_S + 21 * 3600.0


async def test_a_budget_pauses_its_model_until_the_next_utc_midnight() -> None:
    wall = FakeClock(EVENING_S)
    budgets = LocalBudgets({"flux": 2}, wall)
    assert await budgets.take("flux")
    assert await budgets.take("flux")
    assert not await budgets.take("flux")
    assert budgets.paused_until_s("flux") == next_reset_s(EVENING_S) == EVENING_S + 3 * 3600
    assert budgets.paused_until_s("sdxl") is None  # no budget: never paused by one
    wall.advance(3 * 3600 - 1)
    assert budgets.paused_until_s("flux") is not None
    wall.advance(1)  # 00:00 UTC
    assert budgets.paused_until_s("flux") is None
    assert budgets.used("flux") == 0


async def test_a_failed_image_is_given_back_and_the_quota_error_pauses_without_a_budget() -> None:
    wall = FakeClock(EVENING_S)
    budgets = LocalBudgets({"flux": 1}, wall)
    assert await budgets.take("flux")
    await budgets.give_back("flux")
    assert budgets.used("flux") == 0
    await budgets.quota_exhausted("sdxl")
    assert budgets.paused_until_s("sdxl") == EVENING_S + 3 * 3600
    wall.advance(3 * 3600)
    assert budgets.paused_until_s("sdxl") is None


@dataclass
class Harness:
    app: App
    chat: RecordingChat
    clock: FakeClock
    wall: FakeClock
    generator: FakeGenerator
    outcomes: list[JobOutcome] = field(default_factory=list)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    async def say(self, text: str, user: str = "ann", *, owner: bool = False) -> int:
        message_id = next(self._ids)
        await self.app.bot.handle(
            IncomingMessage(
                chat_id="chat",
                message_id=message_id,
                user_id=user,
                text=text,
                from_owner=owner,
            )
        )
        return message_id

    async def finish(self) -> None:
        """Every job so far has ended; the bot keeps running."""
        await until_idle(self.app)

    def replies_to(self, message_id: int) -> list[str]:
        return [e.text for e in self.chat.events if e.reply_to == message_id]


def make_harness(
    wall: FakeClock | None = None,
    connected: Callable[[], bool] = lambda: True,
    **settings: object,
) -> Harness:
    clock = FakeClock()
    wall = wall or FakeClock(EVENING_S)
    chat = RecordingChat(clock=clock)
    generator = FakeGenerator()
    values: dict[str, object] = {
        "flux_worker_url": "http://127.0.0.1:9/flux",
        "sdxl_worker_url": "http://127.0.0.1:9/sdxl",
        "sdxl_api_key": "test-key",
        "image_user_limits": "off",
    }
    values.update(settings)
    outcomes: list[JobOutcome] = []
    app = build_app(
        load_settings(env_file=None, **values),
        chat,
        on_outcome=outcomes.append,
        generator=generator,
        enhancer=FakeEnhancer(),
        clock=clock,
        wall_clock=wall,
        sleep=clock.sleep,
        connected=connected,
    )
    return Harness(app, chat, clock, wall, generator, outcomes)


@pytest.fixture
async def budgeted() -> AsyncIterator[Harness]:
    h = make_harness(flux_daily_budget=2)
    await h.app.start()
    yield h
    await h.app.aclose()


async def test_all_users_together_are_held_to_the_global_limit() -> None:
    h = make_harness(image_global_limits="2/1h", image_user_limits="5/1h")
    await h.app.start()
    try:
        await h.say("/image=flux=one", user="ann")
        await h.say("/image=flux=two", user="bob")
        third = await h.say("/image=flux=three", user="cat")
        await h.finish()
        [refusal] = h.replies_to(third)
        assert "limit of 2 images per 1 h for everyone" in refusal
        assert "Try again in 1 h" in refusal
        assert len(h.generator.calls) == 2
        # cat's own window was given back: only the global one is full.
        h.wall.advance(3600)
        again = await h.say("/image=flux=three", user="cat")
        await h.finish()
        assert not any("limit" in text for text in h.replies_to(again))
        assert len(h.generator.calls) == 3
    finally:
        await h.app.aclose()


async def test_a_used_budget_pauses_the_model_with_one_line_naming_the_reset(
    budgeted: Harness,
) -> None:
    h = budgeted
    await h.say("/image=flux=one")
    await h.say("/image=flux=two", user="bob")
    await h.finish()
    third = await h.say("/image=flux=three", user="cat")
    [refusal] = h.replies_to(third)
    assert refusal == (
        "❌ Flux has used up today's images; it comes back at 00:00 UTC (in 3 h). "
        "Until then, use another model (/image models)."
    )
    # Another model still serves, and the next UTC day the budget is back.
    await h.say("/image=sdxl=a fox", user="cat")
    h.wall.advance(3 * 3600)
    await h.say("/image=flux=a new day", user="cat")
    await h.finish()
    assert [name for name, _ in h.generator.calls] == ["flux", "flux", "sdxl", "flux"]


async def test_waiting_jobs_hear_the_pause_when_their_turn_comes(budgeted: Harness) -> None:
    h = budgeted
    h.generator.gate = asyncio.Event()
    await h.say("/image=flux=one")
    await h.say("/image=flux=two", user="bob")
    waiting = await h.say("/image=flux=three", user="cat")
    h.generator.gate.set()
    await h.finish()
    assert len(h.generator.calls) == 2
    [outcome] = [o for o in h.outcomes if o.reply_to == waiting]
    assert outcome.error_kind == "paused_until_reset"
    assert outcome.error is not None
    assert "comes back at 00:00 UTC" in outcome.error


async def test_the_workers_quota_error_pauses_the_model_until_the_reset() -> None:
    h = make_harness()
    await h.app.start()
    try:
        h.generator.errors.append(QuotaExhausted("3036: daily free allocation", model="flux"))
        await h.say("/image=flux=one")
        await h.finish()
        later = await h.say("/image=flux=two", user="bob")
        [refusal] = h.replies_to(later)
        assert "comes back at 00:00 UTC (in 3 h)" in refusal
        # Not the breaker's short cool-down: an hour later it is still paused.
        h.wall.advance(3600)
        h.clock.advance(3600)
        later = await h.say("/image=flux=three", user="bob")
        assert "comes back at 00:00 UTC (in 2 h)" in h.replies_to(later)[0]
        assert len(h.generator.calls) == 1
    finally:
        await h.app.aclose()


async def test_the_days_count_and_a_quota_pause_survive_a_restart() -> None:
    wall = FakeClock(EVENING_S)
    first = make_harness(wall, flux_daily_budget=2, sdxl_daily_budget=5)
    await first.app.start()
    await first.say("/image=flux=one")
    await first.finish()
    first.generator.errors.append(QuotaExhausted("3036", model="sdxl"))
    await first.say("/image=sdxl=two")
    await first.finish()
    await first.app.aclose()

    second = make_harness(wall, flux_daily_budget=2, sdxl_daily_budget=5)
    await second.app.start()
    try:
        assert second.app.budgets.used("flux") == 1
        assert second.app.budgets.paused_until_s("sdxl") == EVENING_S + 3 * 3600
        await second.say("/image=flux=two")
        refused = await second.say("/image=flux=three")
        await second.finish()
        assert "comes back at 00:00 UTC" in second.replies_to(refused)[0]
    finally:
        await second.app.aclose()


async def test_stats_show_each_budget_today_in_chat_and_on_the_command_line(
    budgeted: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = budgeted
    await h.say("/image=flux=one")
    await h.say("/image=sdxl=two")
    await h.finish()
    asked = await h.say("/image stats", owner=True)
    [_chart, text] = h.replies_to(asked)  # the day's chart, then the figures
    assert "Used today (UTC): flux 1 of 2; sdxl 1 (no budget)" in text

    out = io.StringIO()
    monkeypatch.setenv("FLUX_WORKER_URL", "http://127.0.0.1:9/flux")
    monkeypatch.setenv("FLUX_DAILY_BUDGET", "2")
    await h.app.aclose()
    # The command line counts from the store, on the real clock: today's jobs only.
    code = await asyncio.to_thread(main, ["stats", "--json"], out=out)
    assert code == 0
    budgets = json.loads(out.getvalue())["budgets"]
    assert budgets == [{"model": "flux", "used": 0, "limit": 2, "paused_until_s": None}]

"""Prompts improved ahead of the queue, seen through the whole bot with gated fakes.

The enhancer here answers only when a test lets it, per prompt, so each test
can hold a job's improvement and look at what the worker and the chat see.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest

from sakaibot.app import App, build_app
from sakaibot.chat.port import IncomingMessage
from sakaibot.enhancer import EnhancedPrompt
from sakaibot.pipeline import JobOutcome
from sakaibot.settings import load_settings
from tests.support.fakes import FakeClock, FakeGenerator, RecordingChat
from tests.support.waiting import app_work, until, until_ended


@dataclass
class GatedEnhancer:
    """An LLM that answers a prompt only once the test opens its gate."""

    started: list[str] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)
    gates: dict[str, asyncio.Event] = field(default_factory=dict)
    broken: set[str] = field(default_factory=set)

    def gate(self, prompt: str) -> asyncio.Event:
        return self.gates.setdefault(prompt, asyncio.Event())

    def release(self, *prompts: str) -> None:
        for prompt in prompts:
            self.gate(prompt).set()

    async def enhance(self, prompt: str) -> EnhancedPrompt:
        self.started.append(prompt)
        try:
            await self.gate(prompt).wait()
        except asyncio.CancelledError:
            self.cancelled.append(prompt)
            raise
        if prompt in self.broken:
            raise RuntimeError("the LLM adapter broke its promise")
        return EnhancedPrompt(text=f"better {prompt}", source="TestLLM (m)")


@dataclass
class Bot:
    app: App
    chat: RecordingChat
    generator: FakeGenerator
    enhancer: GatedEnhancer
    outcomes: list[JobOutcome]
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    async def say(self, text: str, user: str = "ann") -> int:
        message_id = next(self._ids)
        await self.app.bot.handle(IncomingMessage("chat", message_id, user, text))
        return message_id

    def prompts_generated(self) -> list[str]:
        return [params.prompt for _, params in self.generator.calls]

    def status_of(self, message_id: int) -> str | None:
        texts = [e.text for e in self.chat.events if e.kind == "send" and e.reply_to == message_id]
        if not texts:
            return None
        sent = next(
            e.message_id for e in self.chat.events if e.kind == "send" and e.reply_to == message_id
        )
        return self.chat.texts.get(sent)


async def make_bot(enhance_ahead: int) -> Bot:
    clock = FakeClock()
    chat = RecordingChat(clock=clock)
    generator = FakeGenerator(gate=asyncio.Event())
    enhancer = GatedEnhancer()
    outcomes: list[JobOutcome] = []
    app = build_app(
        load_settings(
            env_file=None,
            flux_worker_url="http://127.0.0.1:9/flux",
            enhance_ahead=enhance_ahead,
            status_edit_interval_s=0.0,
        ),
        chat,
        on_outcome=outcomes.append,
        generator=generator,
        enhancer=enhancer,
        clock=clock,
        sleep=clock.sleep,
    )
    await app.start()
    return Bot(app, chat, generator, enhancer, outcomes)


@pytest.fixture
async def bot() -> AsyncIterator[Bot]:
    made = await make_bot(enhance_ahead=2)
    yield made
    await made.app.aclose()


async def test_while_one_job_generates_the_next_two_are_improved(bot: Bot) -> None:
    bot.enhancer.release("one")
    for prompt in ("one", "two", "three", "four"):
        await bot.say(f"/image=flux={prompt}", user=prompt)
    await until(lambda: bot.generator.calls, waiting_for="job one to generate")
    # Job one generates; two and three are being improved; four waits its turn.
    await until(
        lambda: bot.enhancer.started == ["one", "two", "three"],
        waiting_for="two and three to be improved ahead",
    )
    bot.enhancer.release("two", "three", "four")
    bot.generator.gate.set()
    await until_ended(bot.app, bot.outcomes, 4)
    assert bot.prompts_generated() == ["better one", "better two", "better three", "better four"]
    assert all(o.ok for o in bot.outcomes)


async def test_the_worker_is_asked_at_once_when_the_prompt_is_ready(bot: Bot) -> None:
    bot.enhancer.release("one", "two")
    first = await bot.say("/image=flux=one")
    second = await bot.say("/image=flux=two")
    await until(lambda: bot.generator.calls, waiting_for="job one to generate")
    await until(lambda: bot.app.status.pending() == 2, waiting_for="both statuses")
    await bot.app.status.drain()
    # Improved while it waited: its status says where it stands, not "improving".
    await until(
        lambda: (bot.status_of(second) or "").startswith("⏳ Queued for Flux: next in line"),
        waiting_for="job two's place",
        settle=bot.app.status.drain,
    )
    assert bot.status_of(first) == "🎨 Generating with Flux…"
    bot.generator.gate.set()
    await until_ended(bot.app, bot.outcomes, 2)
    # Job two never went through the "improving" step after it started.
    assert bot.prompts_generated() == ["better one", "better two"]
    assert bot.enhancer.started == ["one", "two"]


async def test_a_waiting_job_says_its_prompt_is_being_improved(bot: Bot) -> None:
    bot.enhancer.release("one")
    await bot.say("/image=flux=one")
    second = await bot.say("/image=flux=two")
    await until(lambda: "two" in bot.enhancer.started, waiting_for="job two's improvement")
    await until(
        lambda: bot.status_of(second) == "✨ Improving your prompt…",
        waiting_for="job two to say its prompt is being improved",
        settle=bot.app.status.drain,
    )
    bot.enhancer.release("two")
    await until(
        lambda: (bot.status_of(second) or "").startswith("⏳ Queued for Flux: next in line"),
        waiting_for="job two's place once its prompt is ready",
        settle=bot.app.status.drain,
    )
    bot.generator.gate.set()
    await until_ended(bot.app, bot.outcomes, 2)


async def test_a_job_whose_prompt_is_not_ready_waits_for_it(bot: Bot) -> None:
    bot.enhancer.release("one")
    bot.generator.gate.set()
    await bot.say("/image=flux=one")
    await bot.say("/image=flux=two")
    await until_ended(bot.app, bot.outcomes, 1)
    await until(lambda: "two" in bot.enhancer.started, waiting_for="job two's improvement")
    await bot.app.status.drain()
    # Its turn has come, but the improvement is not done: the worker is not asked.
    assert bot.prompts_generated() == ["better one"]
    bot.enhancer.release("two")
    await until_ended(bot.app, bot.outcomes, 2)
    assert bot.prompts_generated() == ["better one", "better two"]
    assert bot.enhancer.started == ["one", "two"]  # improved once, not again


async def test_a_cancelled_job_has_its_improvement_cancelled(bot: Bot) -> None:
    bot.enhancer.release("one")
    await bot.say("/image=flux=one")
    await bot.say("/image=flux=two", user="bob")
    await until(lambda: "two" in bot.enhancer.started, waiting_for="job two's improvement")
    await bot.say("/image cancel", user="bob")
    await until(lambda: bot.enhancer.cancelled == ["two"], waiting_for="the LLM call cancelled")
    bot.generator.gate.set()
    await until_ended(bot.app, bot.outcomes, 2)
    assert bot.prompts_generated() == ["better one"]
    assert sorted((o.ok, o.error_kind) for o in bot.outcomes) == [
        (False, "cancelled"),
        (True, None),
    ]


async def test_raw_jobs_are_never_improved(bot: Bot) -> None:
    bot.enhancer.release("one")
    await bot.say("/image=flux=one")
    await bot.say("/image=flux=two --raw")
    await bot.say("/image=flux=three")
    await until(lambda: "three" in bot.enhancer.started, waiting_for="job three improved ahead")
    assert bot.enhancer.started == ["one", "three"]
    bot.enhancer.release("three")
    bot.generator.gate.set()
    await until_ended(bot.app, bot.outcomes, 3)
    assert bot.prompts_generated() == ["better one", "two", "better three"]


async def test_a_broken_enhancer_falls_back_to_the_users_prompt(bot: Bot) -> None:
    bot.enhancer.broken.add("two")
    bot.enhancer.release("one", "two")
    await bot.say("/image=flux=one")
    await bot.say("/image=flux=two")
    bot.generator.gate.set()
    await until_ended(bot.app, bot.outcomes, 2)
    assert bot.prompts_generated() == ["better one", "two"]
    assert all(o.ok for o in bot.outcomes)


async def test_ahead_zero_improves_each_prompt_in_its_turn() -> None:
    bot = await make_bot(enhance_ahead=0)
    try:
        bot.enhancer.release("one", "two")
        await bot.say("/image=flux=one")
        await bot.say("/image=flux=two")
        await until(lambda: bot.generator.calls, waiting_for="job one to generate")
        await until(
            lambda: bot.app.status.pending() == 2,
            waiting_for="both statuses",
            settle=app_work(bot.app),
        )
        await bot.app.status.drain()
        assert bot.enhancer.started == ["one"]  # two is improved only when it starts
        bot.generator.gate.set()
        await until_ended(bot.app, bot.outcomes, 2)
        assert bot.enhancer.started == ["one", "two"]
    finally:
        await bot.app.aclose()

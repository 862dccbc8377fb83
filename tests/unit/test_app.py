"""The whole core wired by the app factory, with fakes only at the edges.

Each test plays a conversation: messages in, what the chat shows out.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest

from sakaibot.app import App, build_app, configured_secrets
from sakaibot.chat.port import IncomingMessage
from sakaibot.errors import (
    ContentFiltered,
    TransientWorkerError,
    WorkerGaveUp,
)
from sakaibot.generation import GenerationParams, GenerationResult
from sakaibot.models import ModelSpec
from sakaibot.pipeline import JobOutcome
from sakaibot.settings import load_settings
from tests.support.fakes import (
    FakeClock,
    FakeEnhancer,
    FakeGenerator,
    RecordingChat,
    tiny_image,
)
from tests.support.waiting import until


@dataclass
class Harness:
    app: App
    chat: RecordingChat
    clock: FakeClock
    generator: FakeGenerator
    enhancer: FakeEnhancer
    outcomes: list[JobOutcome] = field(default_factory=list)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    async def say(self, text: str, user: str = "ann", reply_to: int | None = None) -> int:
        message_id = next(self._ids)
        await self.app.bot.handle(
            IncomingMessage(
                chat_id="chat",
                message_id=message_id,
                user_id=user,
                text=text,
                reply_to_message_id=reply_to,
            )
        )
        return message_id

    async def finish(self) -> None:
        await asyncio.wait_for(self.app.drain(), timeout=10)

    def replies_to(self, message_id: int) -> list[str]:
        return [e.text for e in self.chat.events if e.reply_to == message_id]


def make_harness(generator: FakeGenerator | None = None, **settings: object) -> Harness:
    clock = FakeClock()
    chat = RecordingChat(clock=clock)
    generator = generator or FakeGenerator()
    enhancer = FakeEnhancer()
    values: dict[str, object] = {
        "flux_worker_url": "http://127.0.0.1:9/flux",
        "sdxl_worker_url": "http://127.0.0.1:9/sdxl",
        "sdxl_api_key": "test-key",
        "status_edit_interval_s": 3.0,
    }
    values.update(settings)
    outcomes: list[JobOutcome] = []
    app = build_app(
        load_settings(env_file=None, **values),
        chat,
        on_outcome=outcomes.append,
        generator=generator,
        enhancer=enhancer,
        clock=clock,
        sleep=clock.sleep,
    )
    return Harness(app, chat, clock, generator, enhancer, outcomes)


@pytest.fixture
async def harness() -> AsyncIterator[Harness]:
    h = make_harness()
    await h.app.start()
    yield h
    await h.app.aclose()


async def test_an_image_is_delivered_and_the_status_removed(harness: Harness) -> None:
    harness.generator.gate = asyncio.Event()
    command = await harness.say("/image=flux=a red fox in the snow")
    second = await harness.say("/image=flux=a second fox", user="bob")
    # While the first generates, its status says so and the second waits in line
    # (its prompt improved meanwhile, see test_enhance_ahead.py).
    expected = [
        "🎨 Generating with Flux…",
        "⏳ Queued for Flux: next in line, ready in about 20 s.",
    ]
    await until(
        lambda: harness.chat.visible_texts() == expected,
        waiting_for="the first generating and the second in line",
        settle=harness.app.status.drain,
    )
    assert [e.reply_to for e in harness.chat.of_kind("send")] == [command, second]
    harness.generator.gate.set()
    await harness.finish()
    images = harness.chat.of_kind("image")
    assert sorted(e.reply_to for e in images) == [command, second]
    [image] = [e for e in images if e.reply_to == command]
    assert image.image is not None
    assert image.image.filename.endswith(".jpg")  # the bytes are JPEG (defect 6)
    assert image.text.startswith("🎨 Flux · prompt: TestLLM (model-x) · ")
    assert image.text.endswith("\n\nenhanced: a red fox in the snow")
    # Both status messages are gone now that the images are out.
    assert harness.chat.visible_texts() == []
    assert sorted((o.reply_to, o.ok, o.model) for o in harness.outcomes) == [
        (command, True, "flux"),
        (second, True, "flux"),
    ]


async def test_raw_skips_the_enhancer_and_style_adds_words(harness: Harness) -> None:
    await harness.say("/image=flux=a red fox --raw --style anime")
    await harness.finish()
    assert harness.enhancer.prompts == []
    prompt = harness.generator.calls[0][1].prompt
    assert prompt.startswith("a red fox, anime style")


async def test_flags_reach_the_worker(harness: Harness) -> None:
    await harness.say("/image=sdxl=a lighthouse --ar 16:9 --seed 42 --neg blurry --steps 50")
    await harness.finish()
    model, params = harness.generator.calls[0]
    assert model == "sdxl"
    assert (params.width, params.height) == (1344, 768)
    assert params.seed == 42
    assert params.negative_prompt == "blurry"
    assert params.steps == 20  # clamped to SDXL's maximum
    caption = harness.chat.of_kind("image")[0].text
    assert "seed 42 · 16:9 · 20 steps (the maximum; 50 asked) · without: blurry" in caption


async def test_file_flag_asks_for_a_document(harness: Harness) -> None:
    await harness.say("/image=flux=a fox --file")
    await harness.finish()
    image = harness.chat.of_kind("image")[0].image
    assert image is not None
    assert image.as_file is True


async def test_unknown_model_names_the_available_ones(harness: Harness) -> None:
    """Defect 1: the 'unknown model' message used to be unreachable."""
    command = await harness.say("/image=dalle=a cat")
    assert harness.replies_to(command) == [
        "❌ Unknown model 'dalle'. Available models: flux, sdxl. "
        "Example: /image=flux=a red fox in the snow"
    ]
    assert harness.outcomes[0].ok is False
    assert harness.outcomes[0].error_kind == "unknown_model"


async def test_rate_limit_counts_only_accepted_requests() -> None:
    """Defect 5: rejected and failed requests must not use up the allowance."""
    h = make_harness(image_user_limits="2/1m", image_user_max_pending=10)
    await h.app.start()
    try:
        await h.say("/image=dalle=nope")  # rejected: does not count
        await h.say("/image=flux=one")
        await h.say("/image=flux=two")
        third = await h.say("/image=flux=three")
        reply = h.replies_to(third)[0]
        assert reply.startswith("❌ You have reached the limit of 2 images per 1 min.")
        assert "Try again in 1 min" in reply
        await h.finish()
    finally:
        await h.app.aclose()


async def test_a_failure_that_is_not_the_users_fault_is_refunded() -> None:
    h = make_harness(image_user_limits="1/1h")
    h.generator.errors.append(WorkerGaveUp("503s", model="flux", attempts=4))
    await h.app.start()
    try:
        first = await h.say("/image=flux=one")
        await h.finish()
    finally:
        await h.app.aclose()
    assert "tried 4 times" in h.chat.texts[max(h.chat.texts)]
    assert h.outcomes[0].ok is False
    h2_check = h.app.limiter.check("ann")
    assert h2_check is None, "the failed job's slot should have been given back"
    # The one message that answers the command says what went wrong.
    assert len(h.replies_to(first)) == 1
    assert h.chat.visible_texts() == [
        "❌ The flux worker is busy or unreachable right now (tried 4 times). "
        "Your allowance was not used; please try again in a few minutes."
    ]


async def test_filtered_prompt_is_not_refunded_and_says_what_to_do() -> None:
    h = make_harness(image_user_limits="1/1h")
    h.generator.errors.append(ContentFiltered("nsfw", model="flux"))
    await h.app.start()
    try:
        await h.say("/image=flux=something")
        await h.finish()
    finally:
        await h.app.aclose()
    assert h.chat.visible_texts() == [
        "❌ Your prompt was filtered by the image service's safety check. "
        "Rephrase it and try again."
    ]
    assert h.app.limiter.check("ann") is not None


async def test_every_accepted_job_ends_with_exactly_one_outcome() -> None:
    h = make_harness(image_user_limits="off", image_user_max_pending=100)
    h.generator.errors.extend(
        [TransientWorkerError("x", model="flux"), ContentFiltered("y", model="sdxl")]
    )
    await h.app.start()
    try:
        for n in range(12):
            await h.say(f"/image={'flux' if n % 2 else 'sdxl'}=p{n}", user=f"u{n % 3}")
        await h.finish()
    finally:
        await h.app.aclose()
    assert len(h.outcomes) == 12
    assert sum(o.ok for o in h.outcomes) == 10
    assert len({o.reply_to for o in h.outcomes}) == 12
    assert len(h.chat.of_kind("image")) == 10
    assert h.app.queues.live_job_count() == 0


async def test_an_unsent_image_is_kept_and_retry_sends_it() -> None:
    from sakaibot.errors import ChatError

    h = make_harness()
    h.chat.image_failures.append(ChatError("upload failed"))
    await h.app.start()
    try:
        command = await h.say("/image=flux=a fox")
        await h.finish()
        job_id = h.outcomes[0].job_id
        assert h.chat.visible_texts() == [
            "❌ The image was made but could not be sent. It is kept for 24 h: "
            f"send /image retry {job_id} to try again."
        ]
        assert h.outcomes[0].ok is False
        stranger = await h.say(f"/image retry {job_id}", user="mallory")
        assert h.replies_to(stranger)[0].startswith(f"❌ No unsent image {job_id} of yours")
        await h.say(f"/image retry {job_id}")
        [image] = h.chat.of_kind("image")
        assert image.reply_to == command
        assert image.text.startswith("🎨 Flux · prompt:")
        again = await h.say(f"/image retry {job_id}")  # sent once; nothing left to retry
        assert h.replies_to(again)[0].startswith(f"❌ No unsent image {job_id} of yours")
    finally:
        await h.app.aclose()


async def test_status_lists_positions_and_cancel_moves_others_up() -> None:
    h = make_harness(image_user_max_pending=5)
    h.generator.gate = asyncio.Event()
    await h.app.start()
    try:
        await h.say("/image=flux=first", user="bob")
        await until(lambda: not h.app.queues.waiting_jobs("flux"), waiting_for="bob's job to start")
        await h.say("/image=flux=second")
        await h.say("/image=flux=third")
        status_msg = await h.say("/image status")
        status_text = h.replies_to(status_msg)[0]
        assert status_text.startswith("Your images:")
        assert "position 1" in status_text
        assert "position 2" in status_text
        newest = h.app.queues.jobs_of("ann")[-1][0]
        cancel = await h.say("/image cancel")
        assert h.replies_to(cancel) == [f"🚫 Cancelled job {newest.id} (Flux)."]
        nothing = await h.say(f"/image cancel {newest.id}")
        assert "You have no waiting or running job" in h.replies_to(nothing)[0]
        h.generator.gate.set()
        await h.finish()
    finally:
        await h.app.aclose()
    assert [o.ok for o in h.outcomes].count(True) == 2
    assert any(o.error == "Cancelled." for o in h.outcomes)


async def test_models_lists_queues_and_flags(harness: Harness) -> None:
    message = await harness.say("/image models")
    text = harness.replies_to(message)[0]
    assert "• flux (Flux): 0 waiting, 0 generating" in text
    assert "--neg" in text.split("• sdxl")[1]


async def test_help_and_unknown_subcommand_give_usage(harness: Harness) -> None:
    help_msg = await harness.say("/image")
    other = await harness.say("/image frobnicate")
    assert "/image=" in harness.replies_to(help_msg)[0]
    assert harness.replies_to(other) == harness.replies_to(help_msg)
    assert harness.outcomes == []  # not generation commands


async def test_other_messages_are_ignored(harness: Harness) -> None:
    await harness.say("hello there")
    await harness.say("/imagine something")
    assert harness.chat.events == []


async def test_queue_full_and_too_many_pending_are_clear() -> None:
    h = make_harness(image_queue_max=1, image_user_max_pending=1)
    h.generator.gate = asyncio.Event()
    await h.app.start()
    try:
        await h.say("/image=flux=one", user="a")  # generating (held)
        await h.say("/image=flux=two", user="b")  # waiting: the queue is full now
        full = await h.say("/image=flux=three", user="c")
        assert "The Flux queue is full (1 waiting)" in h.replies_to(full)[0]
        pending = await h.say("/image=sdxl=four", user="a")
        assert "You already have 1 image waiting or generating" in h.replies_to(pending)[0]
    finally:
        await h.app.aclose()


async def test_a_flood_wait_on_delivery_is_waited_out() -> None:
    from sakaibot.errors import FloodWait

    h = make_harness()
    h.chat.image_failures.append(FloodWait(42))
    await h.app.start()
    try:
        await h.say("/image=flux=a fox")
        await h.finish()
    finally:
        await h.app.aclose()
    assert len(h.chat.of_kind("image")) == 1
    assert h.outcomes[0].ok is True


async def test_a_flood_wait_longer_than_the_budget_fails_clearly() -> None:
    from sakaibot.errors import FloodWait

    h = make_harness(delivery_max_wait_s=60, undelivered_retention_s=0)
    h.chat.image_failures.append(FloodWait(600))
    await h.app.start()
    try:
        await h.say("/image=flux=a fox")
        await h.finish()
    finally:
        await h.app.aclose()
    assert h.chat.of_kind("image") == []
    assert h.outcomes[0].ok is False
    # With keeping turned off (retention 0) nobody is offered a retry.
    assert h.chat.visible_texts() == [
        "❌ The image was made but could not be sent. Please try again."
    ]


async def test_an_upload_does_not_hold_the_models_slot() -> None:
    h = make_harness()
    release_upload = asyncio.Event()
    first_upload_started = asyncio.Event()
    second_generated = asyncio.Event()
    send_image = h.chat.send_image
    generate = h.generator.generate

    async def slow_upload(chat_id: str, image: object, *, reply_to: int | None) -> int:
        first_upload_started.set()
        await release_upload.wait()
        return await send_image(chat_id, image, reply_to=reply_to)  # type: ignore[arg-type]

    async def counting_generate(model: object, params: object) -> object:
        result = await generate(model, params)  # type: ignore[arg-type]
        if len(h.generator.calls) == 2:
            second_generated.set()
        return result

    h.chat.send_image = slow_upload  # type: ignore[method-assign]
    h.generator.generate = counting_generate  # type: ignore[assignment, method-assign]
    await h.app.start()
    try:
        await h.say("/image=flux=first")
        await h.say("/image=flux=second", user="bob")
        await asyncio.wait_for(first_upload_started.wait(), timeout=5)
        # The second job is generated while the first image is still uploading.
        await asyncio.wait_for(second_generated.wait(), timeout=5)
        release_upload.set()
        await h.finish()
    finally:
        await h.app.aclose()
    assert [o.ok for o in h.outcomes] == [True, True]


async def test_shutdown_past_its_grace_ends_even_if_a_job_never_sees_its_cancel(
    caplog: pytest.LogCaptureFixture,
) -> None:
    deaf = FakeGenerator(gate=asyncio.Event(), deaf=True)
    h = make_harness(generator=deaf)
    h.app.stop_wait_s = 0.2
    await h.app.start()
    try:
        await h.say("/image=flux=a fox")
        await until(lambda: deaf.running == 1, waiting_for="the job to generate")
        with caplog.at_level(logging.WARNING):
            async with asyncio.timeout(10):  # bounded, whatever the job does
                await h.app.shutdown(grace_s=0.1)
        assert "jobs still running after 0 s were abandoned" in caplog.text
        assert "queue-flux-0 did not stop within 0.2 s; left behind" in caplog.text
        assert h.outcomes == []

        # Nothing lost: the next start makes the image.
        outcomes: list[JobOutcome] = []
        restarted = build_app(
            h.app.settings,
            RecordingChat(),
            on_outcome=outcomes.append,
            generator=FakeGenerator(),
            enhancer=FakeEnhancer(),
        )
        await restarted.start()
        await asyncio.wait_for(restarted.drain(), timeout=10)
        await restarted.aclose()
        assert [(o.reply_to, o.ok) for o in outcomes] == [(1, True)]
    finally:
        deaf.gate.set()  # type: ignore[union-attr]


async def test_shutdown_finishes_the_running_job_and_keeps_the_waiting_one() -> None:
    h = make_harness(image_user_limits="5/1h")
    h.generator.gate = asyncio.Event()
    await h.app.start()
    await h.say("/image=flux=running")
    waiting = await h.say("/image=flux=waiting", user="bob")
    await asyncio.wait_for(h.app.status.drain(), timeout=5)
    stopping = asyncio.create_task(h.app.shutdown(grace_s=10))
    # Shutdown takes the waiting job off the queue before the running one can end.
    await until(
        lambda: not h.app.queues.waiting_jobs("flux"),
        waiting_for="shutdown to take the waiting job off the queue",
    )
    h.generator.gate.set()
    await asyncio.wait_for(stopping, timeout=10)
    assert [(o.user_id, o.ok) for o in h.outcomes] == [("ann", True)]
    assert h.chat.visible_texts() == [
        "⏸ SakaiBot is restarting. Your image is kept and will be made as soon as it is back."
    ]

    # The next start makes bob's image, in the same status message.
    outcomes: list[JobOutcome] = []
    restarted = build_app(
        h.app.settings,
        h.chat,
        on_outcome=outcomes.append,
        generator=FakeGenerator(),
        enhancer=FakeEnhancer(),
        clock=h.clock,
        sleep=h.clock.sleep,
    )
    await restarted.start()
    await asyncio.wait_for(restarted.drain(), timeout=5)
    await restarted.aclose()
    assert [(o.user_id, o.ok) for o in outcomes] == [("bob", True)]
    assert [e.reply_to for e in h.chat.of_kind("image")][-1] == waiting
    assert h.chat.visible_texts() == []


async def test_without_an_llm_the_prompt_step_is_skipped() -> None:
    clock = FakeClock()
    chat = RecordingChat(clock=clock)
    app = build_app(
        load_settings(
            env_file=None, flux_worker_url="http://127.0.0.1:9/flux", llm_provider="none"
        ),
        chat,
        generator=FakeGenerator(),
        clock=clock,
        sleep=clock.sleep,
        edit_interval_s=lambda _chat: 0.0,
    )
    await app.start()
    try:
        await app.bot.handle(IncomingMessage("c", 1, "ann", "/image=flux=a fox"))
        await asyncio.wait_for(app.drain(), timeout=5)
    finally:
        await app.aclose()
    shown = [e.text for e in chat.events if e.kind in {"send", "edit"}]
    assert "✨ Improving your prompt…" not in shown
    assert chat.of_kind("image")[0].text.startswith("🎨 Flux · prompt: original prompt ·")


async def test_status_lists_a_job_whose_image_is_on_its_way() -> None:
    h = make_harness()
    release = asyncio.Event()
    uploading = asyncio.Event()
    send_image = h.chat.send_image

    async def held_upload(chat_id: str, image: object, *, reply_to: int | None) -> int:
        uploading.set()
        await release.wait()
        return await send_image(chat_id, image, reply_to=reply_to)  # type: ignore[arg-type]

    h.chat.send_image = held_upload  # type: ignore[method-assign]
    await h.app.start()
    try:
        await h.say("/image=flux=a fox")
        await asyncio.wait_for(uploading.wait(), timeout=5)
        status = await h.say("/image status")
        assert h.replies_to(status)[0].split("\n")[1].endswith("flux: sending")
        release.set()
        await h.finish()
    finally:
        await h.app.aclose()


def test_configured_secrets_finds_every_secret_value() -> None:
    settings = load_settings(
        env_file=None,
        openrouter_api_key="sk-or-test-openrouter",
        gemini_api_key="gemini-test-key",
        sdxl_worker_url="https://sdxl.example/",
        sdxl_api_key="sdxl-test-key",
        telegram_api_hash="0123456789abcdef0123456789abcdef",
        redis_url="redis://:p%40ss-word@127.0.0.1:6379/0",
        image_models='{"extra": {"contract": "get", "url": "https://x.example/", '
        '"api_key": "extra-model-key"}}',
    )
    found = set(configured_secrets(settings))
    assert {
        "sk-or-test-openrouter",
        "gemini-test-key",
        "sdxl-test-key",
        "0123456789abcdef0123456789abcdef",
        "redis://:p%40ss-word@127.0.0.1:6379/0",
        "p@ss-word",
        "extra-model-key",
    } <= found
    assert "" not in found


# -- cancelling a job that has started


@dataclass
class GatedGenerator:
    """Holds every generation until released; notes when one starts and is abandoned."""

    started: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    abandoned: list[str] = field(default_factory=list)
    calls: list[str] = field(default_factory=list)

    async def generate(self, model: ModelSpec, params: GenerationParams) -> GenerationResult:
        self.calls.append(params.prompt)
        self.started.set()
        try:
            await self.release.wait()
        except asyncio.CancelledError:
            self.abandoned.append(params.prompt)
            raise
        return GenerationResult(True, tiny_image(), None)


def gated_harness(generator: GatedGenerator, **settings: object) -> Harness:
    clock = FakeClock()
    chat = RecordingChat(clock=clock)
    enhancer = FakeEnhancer()
    values: dict[str, object] = {
        "flux_worker_url": "http://127.0.0.1:9/flux",
        "status_edit_interval_s": 0,
        "llm_provider": "none",
    }
    values.update(settings)
    outcomes: list[JobOutcome] = []
    app = build_app(
        load_settings(env_file=None, **values),
        chat,
        on_outcome=outcomes.append,
        generator=generator,
        enhancer=enhancer,
        clock=clock,
        sleep=clock.sleep,
    )
    return Harness(app, chat, clock, FakeGenerator(), enhancer, outcomes)


@pytest.mark.parametrize("how", ["newest", "by id", "as a reply"])
async def test_a_generating_job_is_cancelled_by_its_owner(how: str) -> None:
    generator = GatedGenerator()
    h = gated_harness(generator)
    await h.app.start()
    try:
        first = await h.say("/image=flux=a red fox")
        async with asyncio.timeout(5):
            await generator.started.wait()
        [(job, place)] = h.app.queues.jobs_of("ann")
        assert place is None  # being generated, not waiting
        second = await h.say("/image=flux=a grey wolf", user="bob")
        await asyncio.wait_for(h.app.status.drain(), timeout=5)
        status_id = next(e.message_id for e in h.chat.of_kind("send") if e.reply_to == first)

        if how == "newest":
            cancel = await h.say("/image cancel")
        elif how == "by id":
            cancel = await h.say(f"/image cancel {job.id}")
        else:
            cancel = await h.say("/image cancel", reply_to=status_id)

        assert h.replies_to(cancel) == [f"🚫 Cancelled job {job.id} (Flux)."]
        assert generator.abandoned == ["enhanced: a red fox"]
        # The model's slot is free at once: bob's job is being generated now.
        generator.started.clear()
        async with asyncio.timeout(5):
            await generator.started.wait()
        assert generator.calls == ["enhanced: a red fox", "enhanced: a grey wolf"]
        generator.release.set()
        await h.finish()
        record = await h.app.store.get_job(job.id)
    finally:
        await h.app.aclose()

    assert record is not None
    assert record.state == "cancelled"
    mine = [o for o in h.outcomes if o.job_id == job.id]
    assert [(o.ok, o.error_kind, o.error) for o in mine] == [(False, "cancelled", "Cancelled.")]
    assert [e.reply_to for e in h.chat.of_kind("image")] == [second]  # none for ann
    # Ann's status message is gone: only the answer to her /image cancel is left.
    assert h.chat.visible_texts() == [f"🚫 Cancelled job {job.id} (Flux)."]
    assert h.app.queues.jobs_of("ann") == []


async def test_cancelling_a_started_job_twice_or_someone_elses_is_refused() -> None:
    generator = GatedGenerator()
    h = gated_harness(generator)
    await h.app.start()
    try:
        await h.say("/image=flux=a red fox")
        async with asyncio.timeout(5):
            await generator.started.wait()
        [(job, _place)] = h.app.queues.jobs_of("ann")
        not_yours = await h.say(f"/image cancel {job.id}", user="bob")
        assert h.replies_to(not_yours)[0].startswith("❌ You have no waiting or running job")
        assert generator.abandoned == []
        await h.say(f"/image cancel {job.id}")
        again = await h.say(f"/image cancel {job.id}")
        assert "You have no waiting or running job" in h.replies_to(again)[0]
        generator.release.set()
        await h.finish()
    finally:
        await h.app.aclose()
    assert [o.error_kind for o in h.outcomes] == ["cancelled"]


async def test_an_id_already_stored_is_drawn_again_unseen() -> None:
    # Ids are drawn at random; one a stored job has is found as the new job is
    # written (no look-up per job), and the request quietly draws another.
    first = make_harness()
    await first.app.start()
    await first.say("/image=flux=a fox")
    await first.finish()
    [taken] = [o.job_id for o in first.outcomes]
    await first.app.aclose()

    draws = iter([taken, "fresh1"])
    outcomes: list[JobOutcome] = []
    again = build_app(
        first.app.settings,
        first.chat,
        on_outcome=outcomes.append,
        generator=FakeGenerator(),
        enhancer=FakeEnhancer(),
        clock=first.clock,
        sleep=first.clock.sleep,
        new_job_id=lambda: next(draws),
    )
    await again.start()
    asked = 100
    await again.bot.handle(IncomingMessage("chat", asked, "bob", "/image=flux=a cat"))
    await asyncio.wait_for(again.drain(), timeout=10)
    await again.aclose()
    assert [(o.job_id, o.ok) for o in outcomes] == [("fresh1", True)]
    assert [e.kind for e in first.chat.events if e.reply_to == asked][-1] == "image"
    assert not [e.text for e in first.chat.events if e.reply_to == asked and "❌" in e.text]

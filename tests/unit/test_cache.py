"""The result cache and the commands that read the store: history, again, resend, stats, cache."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest

from sakaibot.app import App, build_app
from sakaibot.cache import cache_key
from sakaibot.chat.port import IncomingMessage, OutgoingImage
from sakaibot.commands import ImageOptions, ImageRequest
from sakaibot.models import Contract, ModelSpec
from sakaibot.pipeline import JobOutcome
from sakaibot.settings import load_settings
from tests.support.fakes import FakeClock, FakeEnhancer, FakeGenerator, RecordingChat
from tests.support.waiting import until_idle


class UploadingChat(RecordingChat):
    """Remembers uploads the way Telegram does, and records what was reused."""

    reused: list[str | None]

    def __init__(self, clock: FakeClock) -> None:
        super().__init__(clock=clock)
        self.reused = []

    async def send_image(self, chat_id: str, image: OutgoingImage, *, reply_to: int | None) -> int:
        self.reused.append(image.upload_ref)
        message_id = await super().send_image(chat_id, image, reply_to=reply_to)
        if image.upload_ref is None and image.remember_upload is not None:
            image.remember_upload(f"ref-{message_id}")
        return message_id


@dataclass
class Bot:
    app: App
    chat: UploadingChat
    clock: FakeClock
    generator: FakeGenerator
    outcomes: list[JobOutcome] = field(default_factory=list)
    next_id: int = 1

    async def say(self, text: str, user: str = "you", *, owner: bool | None = None) -> int:
        message_id = self.next_id
        self.next_id += 1
        await self.app.bot.handle(
            IncomingMessage(
                "chat", message_id, user, text, from_owner=user == "you" if owner is None else owner
            )
        )
        return message_id

    async def settle(self) -> None:
        """Let every job so far finish, without stopping the bot."""
        await until_idle(self.app)
        await asyncio.wait_for(self.app.status.drain(), timeout=10)

    def replies(self, message_id: int) -> list[str]:
        return [e.text for e in self.chat.events if e.reply_to == message_id]


@pytest.fixture
async def bot() -> AsyncIterator[Bot]:
    clock = FakeClock()
    chat = UploadingChat(clock)
    generator = FakeGenerator()
    outcomes: list[JobOutcome] = []
    app = build_app(
        load_settings(
            env_file=None,
            flux_worker_url="http://127.0.0.1:9/flux",
            image_user_limits="off",
            image_user_max_pending=10,
        ),
        chat,
        on_outcome=outcomes.append,
        generator=generator,
        enhancer=FakeEnhancer(),
        clock=clock,
        wall_clock=clock,
        sleep=clock.sleep,
        edit_interval_s=lambda _chat: 0.0,
    )
    await app.start()
    yield Bot(app, chat, clock, generator, outcomes)
    if generator.gate is not None:
        generator.gate.set()
    await app.aclose()


FLUX = ModelSpec(name="flux", contract=Contract.GET, url="https://flux.example.workers.dev/")


def test_key_ignores_case_spacing_and_delivery_options() -> None:
    base = ImageRequest("flux", "A red  fox", ImageOptions(seed=3))
    same = ImageRequest("flux", "a red fox ", ImageOptions(seed=3, as_file=True, fresh=True))
    other_seed = ImageRequest("flux", "a red fox", ImageOptions(seed=4))
    assert cache_key(FLUX, base) == cache_key(FLUX, same)
    assert cache_key(FLUX, base) != cache_key(FLUX, other_seed)
    assert cache_key(FLUX, base) != cache_key(replace(FLUX, name="sdxl"), base)


def test_key_names_the_worker_that_made_the_image() -> None:
    request = ImageRequest("flux", "a red fox in the snow", ImageOptions())
    demo = replace(FLUX, url="http://127.0.0.1:40123/flux")
    assert cache_key(FLUX, request) != cache_key(demo, request)
    assert cache_key(FLUX, request) != cache_key(replace(FLUX, contract=Contract.POST), request)
    # Settings that do not change the image do not change the key.
    assert cache_key(FLUX, request) == cache_key(replace(FLUX, concurrency=4), request)


async def test_an_image_from_one_worker_never_answers_a_request_for_another(
    tmp_path: Path,
) -> None:
    clock = FakeClock()
    outcomes: list[JobOutcome] = []
    generator = FakeGenerator()

    async def ask(worker_url: str) -> RecordingChat:
        chat = RecordingChat(clock=clock)
        settings = load_settings(
            env_file=None,
            flux_worker_url=worker_url,
            sakaibot_data_dir=tmp_path / "data",
            llm_provider="none",
        )
        app = build_app(
            settings,
            chat,
            on_outcome=outcomes.append,
            generator=generator,
            clock=clock,
            wall_clock=clock,
            sleep=clock.sleep,
            edit_interval_s=lambda _chat: 0.0,
        )
        await app.start()
        try:
            await app.bot.handle(
                IncomingMessage("chat", 1, "you", "/image=flux=a red fox in the snow")
            )
            async with asyncio.timeout(10):
                await app.drain()
        finally:
            await app.aclose()
        return chat

    await ask("http://127.0.0.1:40123/flux")  # a demo's development worker
    live = await ask("https://flux.example.workers.dev/")
    again = await ask("https://flux.example.workers.dev/")
    assert len(generator.calls) == 2
    assert " · from cache" not in live.of_kind("image")[0].text.split("\n")[0]
    assert " · from cache" in again.of_kind("image")[0].text.split("\n")[0]


async def test_the_same_request_again_is_answered_from_the_cache(bot: Bot) -> None:
    await bot.say("/image=flux=a red fox")
    await bot.settle()
    second = await bot.say("/image=flux=A  RED fox")
    await bot.settle()
    assert len(bot.generator.calls) == 1
    images = bot.chat.of_kind("image")
    assert len(images) == 2
    assert images[1].reply_to == second
    assert " · from cache" in images[1].text.split("\n")[0]
    # The chat's upload reference from the first delivery is reused.
    assert bot.chat.reused == [None, f"ref-{images[0].message_id}"]
    assert [o.ok for o in bot.outcomes] == [True, True]


async def test_fresh_and_other_options_make_a_new_image(bot: Bot) -> None:
    await bot.say("/image=flux=a red fox")
    await bot.settle()
    await bot.say("/image=flux=a red fox --fresh")
    await bot.say("/image=flux=a red fox --seed 9")
    await bot.settle()
    assert len(bot.generator.calls) == 3


async def test_an_entry_expires_after_its_ttl(bot: Bot) -> None:
    await bot.say("/image=flux=a red fox")
    await bot.settle()
    bot.clock.advance(86_401)
    await bot.say("/image=flux=a red fox")
    await bot.settle()
    assert len(bot.generator.calls) == 2


async def test_a_cache_hit_does_not_wait_behind_a_busy_model(bot: Bot) -> None:
    await bot.say("/image=flux=a red fox")
    await bot.settle()
    bot.generator.gate = asyncio.Event()
    await bot.say("/image=flux=something slow", user="ann")
    hit = await bot.say("/image=flux=a red fox", user="bob")
    await asyncio.wait_for(bot.app.pipeline.drain(), timeout=5)
    assert [e.reply_to for e in bot.chat.of_kind("image")][-1] == hit
    bot.generator.gate.set()
    await bot.settle()


async def test_history_lists_the_users_jobs_with_ids(bot: Bot) -> None:
    await bot.say("/image=flux=a red fox")
    await bot.say("/image=flux=a blue whale")
    await bot.settle()
    asked = await bot.say("/image history 5")
    [text] = bot.replies(asked)
    ids = {o.reply_to: o.job_id for o in bot.outcomes}
    fox, whale = ids[1], ids[2]
    assert text.startswith("Your last 2 images:")
    assert text.index(f"{whale} flux") < text.index(f"{fox} flux")  # newest first
    assert "a blue whale" in text


async def test_again_makes_a_new_image_from_the_same_prompt_with_a_new_seed(bot: Bot) -> None:
    await bot.say("/image=flux=a red fox --seed 5")
    await bot.settle()
    first_job = bot.outcomes[0].job_id
    again = await bot.say(f"/image again {first_job}")
    await bot.settle()
    assert len(bot.generator.calls) == 2
    first, second = (params for _, params in bot.generator.calls)
    assert first.prompt == second.prompt
    assert second.seed is not None
    assert second.seed != 5 or first.seed != second.seed
    assert bot.chat.of_kind("image")[-1].reply_to == again


async def test_resend_sends_the_stored_image_without_generating(bot: Bot) -> None:
    await bot.say("/image=flux=a red fox")
    await bot.settle()
    job_id = bot.outcomes[0].job_id
    resend = await bot.say(f"/image resend {job_id}")
    await bot.settle()
    assert len(bot.generator.calls) == 1
    first, second = bot.chat.of_kind("image")
    assert second.reply_to == resend
    assert first.image is not None
    assert second.image is not None
    assert second.image.image.data == first.image.image.data
    assert f"#{job_id}" in second.text


async def test_again_and_resend_only_for_your_own_jobs(bot: Bot) -> None:
    await bot.say("/image=flux=a red fox")
    await bot.settle()
    job_id = bot.outcomes[0].job_id
    stranger = await bot.say(f"/image resend {job_id}", user="mallory")
    assert bot.replies(stranger) == [
        f"❌ You have no image {job_id}. See your images and their ids with /image history."
    ]


async def test_stats_and_cache_are_for_the_owner(bot: Bot) -> None:
    await bot.say("/image=flux=a red fox")
    await bot.settle()
    await bot.say("/image=flux=a red fox")
    await bot.settle()
    denied = await bot.say("/image stats", user="ann")
    assert bot.replies(denied) == ["❌ Only the bot's owner can use /image stats."]
    stats = await bot.say("/image stats 1")
    # The owner gets the day as a chart first, then the figures as text.
    [_chart, stats_text] = bot.replies(stats)
    assert [e.kind for e in bot.chat.events if e.reply_to == stats] == ["image", "send"]
    assert "2" in stats_text
    cache = await bot.say("/image cache")
    [cache_text] = bot.replies(cache)
    assert cache_text.startswith("Result cache: 1 entry, ")
    assert "Hit rate over 7 days: 50% (1 of 2)." in cache_text
    cleared = await bot.say("/image cache clear")
    assert bot.replies(cleared) == ["🧹 Cache cleared: 1 entry removed."]
    await bot.say("/image=flux=a red fox")
    await bot.settle()
    assert len(bot.generator.calls) == 2  # after clearing, generated anew
    assert re.search(r"#[0-9a-f]{6}", bot.chat.of_kind("image")[-1].text)


async def test_whoami_gives_the_owner_the_ids_for_allowed_ids(bot: Bot) -> None:
    denied = await bot.say("/image whoami", user="mallory")
    assert bot.replies(denied) == ["❌ Only the bot's owner can use /image whoami."]
    asked = await bot.say("/image whoami")
    [answer] = bot.replies(asked)
    lines = answer.splitlines()
    assert lines[:2] == ["This chat's id: chat", "Your user id: you"]
    assert "add chat to ALLOWED_CHAT_IDS" in lines[2]
    assert "ALLOWED_USER_IDS" in lines[2]


async def test_clearing_the_cache_keeps_images_for_resend(bot: Bot) -> None:
    await bot.say("/image=flux=a red fox")
    await bot.say("/image=flux=a blue whale")
    await bot.settle()
    cleared = await bot.say("/image cache clear")
    assert bot.replies(cleared) == ["🧹 Cache cleared: 2 entries removed."]
    resend = await bot.say(f"/image resend {bot.outcomes[0].job_id}")
    await bot.settle()
    assert bot.chat.of_kind("image")[-1].reply_to == resend

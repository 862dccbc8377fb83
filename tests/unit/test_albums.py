"""``--n``: several images of one request, each its own job, delivered as one album."""

from __future__ import annotations

import re

import pytest

from sakaibot.app import App, build_app
from sakaibot.chat.port import IncomingMessage
from sakaibot.errors import ContentFiltered, EveryoneRateLimited, TooManyPending, WorkerGaveUp
from sakaibot.i18n import LRI, PDI, load_texts
from sakaibot.jobs import Album, Job
from sakaibot.pipeline import JobOutcome
from sakaibot.settings import load_settings
from sakaibot.status import Text, status_text
from tests.support.fakes import FakeClock, FakeGenerator, RecordingChat
from tests.support.waiting import until_ended

GAVE_UP = WorkerGaveUp("503 503 503", model="Flux", attempts=3)
#: The right-to-left mark a Persian caption starts with.
RLM = "\u200f"


def make_app(
    generator: FakeGenerator, clock: FakeClock, chat: RecordingChat, **extra: object
) -> tuple[App, list[JobOutcome]]:
    outcomes: list[JobOutcome] = []
    values: dict[str, object] = {
        "flux_worker_url": "http://127.0.0.1:9/flux",
        "llm_provider": "none",
        "image_user_limits": "off",
        "image_user_max_pending": 20,
        "status_edit_interval_s": 0,
    }
    values.update(extra)
    app = build_app(
        load_settings(env_file=None, **values),
        chat,
        on_outcome=outcomes.append,
        generator=generator,
        clock=clock,
        wall_clock=clock,
        sleep=clock.sleep,
    )
    return app, outcomes


class Harness:
    def __init__(self, generator: FakeGenerator | None = None, **extra: object) -> None:
        self.clock = FakeClock()
        self.chat = RecordingChat(clock=self.clock)
        self.generator = generator or FakeGenerator()
        self.app, self.outcomes = make_app(self.generator, self.clock, self.chat, **extra)
        self.next_id = 1

    async def say(self, text: str, user: str = "ann") -> int:
        message_id = self.next_id
        self.next_id += 1
        await self.app.bot.handle(IncomingMessage("chat", message_id, user, text))
        return message_id

    def replies(self, message_id: int) -> list[str]:
        return [e.text for e in self.chat.events if e.kind == "send" and e.reply_to == message_id]

    def images(self, message_id: int) -> list[str]:
        return [e.text for e in self.chat.events if e.kind == "image" and e.reply_to == message_id]


async def test_four_variations_come_as_one_album_with_each_seed_in_the_caption() -> None:
    h = Harness()
    await h.app.start()
    try:
        command = await h.say("/image=flux=a red fox --n 4")
        await until_ended(h.app, h.outcomes, 1)
        seeds = [params.seed for _, params in h.generator.calls]
        assert len(seeds) == 4
        assert len(set(seeds)) == 4
        assert all(seed is not None for seed in seeds)
        assert len(h.chat.albums) == 1
        assert len(h.chat.albums[0]) == 4
        caption, *rest = h.images(command)
        assert rest == ["", "", ""]  # one caption, on the album's first item
        [outcome] = h.outcomes
        assert outcome.ok
        assert outcome.job_id is not None
        assert f"#{outcome.job_id}" in caption
        for place, seed in enumerate(seeds, start=1):
            assert re.search(rf"\b{place}: seed {seed} #[0-9a-f]{{6}}", caption), caption
        # One status message for the whole request, gone once the album is out.
        assert len(h.replies(command)) == 1
        assert h.chat.visible_texts() == []
    finally:
        await h.app.aclose()


async def test_a_given_seed_is_the_first_and_the_others_follow_it() -> None:
    h = Harness()
    await h.app.start()
    try:
        command = await h.say("/image=flux=a red fox --seed 42 --n 3")
        await until_ended(h.app, h.outcomes, 1)
        assert sorted(params.seed for _, params in h.generator.calls) == [42, 43, 44]
        caption = h.images(command)[0]
        assert "1: seed 42" in caption
        assert "2: seed 43" in caption
        assert "3: seed 44" in caption
    finally:
        await h.app.aclose()


async def test_an_image_that_fails_is_named_and_the_rest_delivered_and_its_slot_refunded() -> None:
    h = Harness(FakeGenerator(errors=[GAVE_UP]), image_user_limits="4/1m")
    await h.app.start()
    try:
        command = await h.say("/image=flux=a red fox --n 3")
        await until_ended(h.app, h.outcomes, 1)
        assert h.outcomes[0].ok
        caption, second = h.images(command)
        assert second == ""
        assert "1: not made (worker unavailable)" in caption
        assert "2: seed" in caption
        assert "3: seed" in caption
        # Three were counted, one given back: two more fit the limit of four, a third not.
        await h.say("/image=flux=a cat --n 2")
        await until_ended(h.app, h.outcomes, 2)
        refused = await h.say("/image=flux=a dog")
        assert h.replies(refused)[0].startswith("❌ You have reached the limit of 4 images")
    finally:
        await h.app.aclose()


async def test_when_no_image_can_be_made_one_message_says_why() -> None:
    h = Harness(FakeGenerator(errors=[GAVE_UP, ContentFiltered("nsfw"), GAVE_UP]))
    await h.app.start()
    try:
        command = await h.say("/image=flux=a red fox --n 3")
        await until_ended(h.app, h.outcomes, 1)
        [outcome] = h.outcomes
        assert not outcome.ok
        assert h.images(command) == []
        [status] = h.chat.visible_texts()
        assert status.startswith("❌ None of the 3 images could be made: 1: worker unavailable")
        assert "2: content filtered" in status
    finally:
        await h.app.aclose()


async def test_a_request_over_the_rate_limit_is_refused_whole() -> None:
    h = Harness(image_user_limits="3/1m")
    await h.app.start()
    try:
        too_many = await h.say("/image=flux=a red fox --n 4")
        assert h.replies(too_many) == [
            "❌ You asked for 4 images, more than the limit of 3 images per 1 min. "
            "Ask for fewer, e.g. --n 3."
        ]
        await h.say("/image=flux=a red fox --n 2")
        over = await h.say("/image=flux=a red fox --n 2")
        assert h.replies(over)[0].startswith(
            "❌ 2 images would go over the limit of 3 images per 1 min. Try again in"
        )
        await until_ended(h.app, h.outcomes, 3)
        assert len(h.generator.calls) == 2  # only the request that fitted was made
    finally:
        await h.app.aclose()


async def test_a_request_over_the_pending_bound_is_refused_whole() -> None:
    h = Harness(image_user_max_pending=3)
    await h.app.start()
    try:
        refused = await h.say("/image=flux=a red fox --n 4")
        assert h.replies(refused) == [
            "❌ You asked for 4 images; you may have at most 3 waiting or generating at once. "
            "Ask for fewer, e.g. --n 3."
        ]
        assert h.app.queues.live_job_count() == 0
        assert h.generator.calls == []
    finally:
        await h.app.aclose()


@pytest.mark.parametrize("value", ["0", "5", "two"])
async def test_n_out_of_range_is_refused_with_the_rule(value: str) -> None:
    h = Harness()
    refused = await h.say(f"/image=flux=a red fox --n {value}")
    assert h.replies(refused) == [
        f"❌ Problem with --n: '{value}' is not a valid value. --n needs how many images "
        "to make at once, from 1 to 4, e.g. --n 4."
    ]


async def test_help_and_models_say_how_many_a_request_may_ask_for() -> None:
    h = Harness(image_max_per_request=6)
    helped = await h.say("/image help")
    assert "--n <2..6>  several variations at once" in h.replies(helped)[0]
    models = await h.say("/image models")
    assert "One request may ask for up to 6 images with --n" in h.replies(models)[0]


def _rendered(text: Text) -> str:
    """A status text as the scheduler sends it (a function is called then)."""
    return text() if callable(text) else text


def test_the_album_status_says_how_many_are_ready_and_what_the_next_is_doing() -> None:
    album = Album("abc123", 4, chat_id="c", reply_to=1, user_id="ann", model="flux")
    jobs = [
        Job(f"j{i}", "ann", "c", 1, None, None, 0.0, album=album, album_index=i)  # type: ignore[arg-type]
        for i in range(4)
    ]
    assert _rendered(status_text(jobs[0], "🎨 Generating…")) == "🖼 0 of 4 ready…\n🎨 Generating…"
    position = ["position 2"]
    status_text(jobs[1], lambda: f"⏳ Queued: {position[0]}")
    album.made, album.ended = 2, {0, 2}
    shown = status_text(jobs[2])
    # Written when sent: the album as it is then, the waiting image's place too.
    position[0] = "next in line"
    assert _rendered(shown) == "🖼 2 of 4 ready…\n⏳ Queued: next in line"
    album.failed, album.ended = 1, {0, 1, 2}
    assert _rendered(status_text(jobs[3], "🎨 Generating…")) == (
        "🖼 2 of 4 ready… (1 could not be made)\n🎨 Generating…"
    )


async def test_an_album_counts_all_its_images_in_everyones_limit() -> None:
    h = Harness(image_global_limits="3/1h", image_user_limits="10/1h")
    await h.app.start()
    try:
        too_many = await h.say("/image=flux=a red fox --n 4")
        [refusal] = h.replies(too_many)
        assert "more than the bot makes for everyone" in refusal
        assert "--n 3" in refusal
        await h.say("/image=flux=a red fox --n 3", user="bob")
        await until_ended(h.app, h.outcomes, 2)
        assert len(h.generator.calls) == 3
        assert len(h.chat.albums) == 1
        # The album used everyone's three: the next image waits for the window.
        late = await h.say("/image=flux=one more", user="cat")
        [full] = h.replies(late)
        assert "for everyone" in full
        assert len(h.generator.calls) == 3
    finally:
        await h.app.aclose()


async def test_a_model_paused_by_its_daily_budget_refuses_an_album_whole() -> None:
    h = Harness(flux_daily_budget=2)
    await h.app.start()
    try:
        await h.say("/image=flux=a red fox --n 2")
        await until_ended(h.app, h.outcomes, 1)
        assert len(h.generator.calls) == 2  # each image took its part of the budget
        refused = await h.say("/image=flux=a red fox --n 2")
        [refusal] = h.replies(refused)
        assert "has used up today's images; it comes back at 00:00 UTC" in refusal
        assert len(h.generator.calls) == 2
    finally:
        await h.app.aclose()


async def test_chat_defaults_apply_to_every_image_and_an_album_offers_no_buttons() -> None:
    h = Harness()
    await h.app.start()
    try:
        await h.app.bot.handle(
            IncomingMessage("chat", 100, "ann", "/image set file on", from_owner=True)
        )
        command = await h.say("/image=flux=a red fox --n 3")
        await until_ended(h.app, h.outcomes, 1)
        images = [e for e in h.chat.events if e.kind == "image" and e.reply_to == command]
        assert len(images) == 3
        assert all(e.image is not None and e.image.as_file for e in images)
        # Telegram takes no buttons on a media group; the one status offers none either.
        assert all(e.image is not None and e.image.actions == () for e in images)
        statuses = [e for e in h.chat.events if e.kind in {"send", "edit"}]
        assert statuses
        assert all(e.actions == () for e in statuses)
    finally:
        await h.app.aclose()


async def test_a_persian_chat_hears_its_album_in_persian_with_seeds_and_ids_isolated() -> None:
    h = Harness(FakeGenerator(errors=[GAVE_UP]), bot_language="fa")
    await h.app.start()
    try:
        command = await h.say("/image=flux=a red fox --seed 42 --n 3")
        await until_ended(h.app, h.outcomes, 1)
        [outcome] = h.outcomes
        statuses = [e.text for e in h.chat.events if e.kind in {"send", "edit"}]
        assert any(text.startswith("🖼 0 از 3 آماده است…") for text in statuses), statuses
        caption = h.images(command)[0]
        assert caption.startswith(RLM)
        assert f"{LRI}#{outcome.job_id}{PDI}" in caption
        # The first image failed (the fake gives up once); the others are named by seed.
        assert "1: ساخته نشد (سرویس در دسترس نبود)" in caption
        for place, seed in ((2, 43), (3, 44)):
            assert re.search(rf"{place}: بذر {LRI}{seed}{PDI} {LRI}#[0-9a-f]{{6}}{PDI}", caption)
        assert "seed" not in caption
    finally:
        await h.app.aclose()


def test_the_album_status_and_refusals_are_told_in_persian() -> None:
    fa = load_texts("fa")
    album = Album("abc123", 4, chat_id="c", reply_to=1, user_id="ann", model="flux", texts=fa)
    job = Job("j0", "ann", "c", 1, None, None, 0.0, album=album, album_index=0, texts=fa)  # type: ignore[arg-type]
    album.made, album.failed, album.ended = 2, 1, {1, 2, 3}
    assert _rendered(status_text(job)) == "🖼 2 از 4 آماده است… (1 ساخته نشد)"
    too_many = TooManyPending(0, 3, asked=4).message_in(fa)
    assert too_many.startswith("4 تصویر خواستید؛")
    assert f"{LRI}--n 3{PDI}." in too_many
    everyone = EveryoneRateLimited(60.0, 3, 3600.0, asked=4).message_in(fa)
    assert "برای همهٔ کاربران" in everyone
    assert "{" not in everyone

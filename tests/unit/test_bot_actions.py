"""One-tap actions and per-chat defaults, as a chat sees them (plain fakes, a real store).

A press is the typed command it stands for, through the same admission, for
the job's owner only; a reply ``/image again`` finds the job by its image; a
chat's defaults fill the flags a request left out and survive a restart.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from sakaibot.app import App, build_app
from sakaibot.chat.port import Action, ActionAnswer, ActionPress, IncomingMessage
from sakaibot.commands import Style
from sakaibot.pipeline import JobOutcome
from sakaibot.settings import load_settings
from tests.support.fakes import FakeClock, FakeGenerator, RecordingChat
from tests.support.waiting import until, until_idle

NOT_YOURS = "Only the person who asked for this image can use its buttons."


@dataclass
class Chat:
    """One group chat on one bot: who says or presses what, and what it shows."""

    app: App
    chat: RecordingChat
    generator: FakeGenerator
    outcomes: list[JobOutcome] = field(default_factory=list)
    next_id: int = 1

    async def say(
        self,
        text: str,
        user: str = "ann",
        *,
        owner: bool = False,
        named: bool = False,
        reply_to: int | None = None,
    ) -> int:
        message_id = self.next_id
        self.next_id += 1
        await self.app.bot.handle(
            IncomingMessage(
                "group",
                message_id,
                user,
                text,
                reply_to_message_id=reply_to,
                from_owner=owner,
                from_named_user=named,
            )
        )
        return message_id

    async def press(self, message_id: int, action: Action, user: str = "ann") -> ActionAnswer:
        return await self.app.bot.handle_action(ActionPress("group", message_id, user, action))

    async def settle(self) -> None:
        await until_idle(self.app)
        await asyncio.wait_for(self.app.status.drain(), timeout=10)

    def replies(self, message_id: int) -> list[str]:
        return [e.text for e in self.chat.events if e.reply_to == message_id]

    def images(self) -> list[int]:
        return [e.message_id for e in self.chat.of_kind("image")]


@asynccontextmanager
async def running(data_dir: Path, **extra: object) -> AsyncIterator[Chat]:
    clock = FakeClock()
    chat = RecordingChat(clock=clock)
    generator = FakeGenerator()
    outcomes: list[JobOutcome] = []
    settings = load_settings(
        env_file=None,
        sakaibot_data_dir=data_dir,
        flux_worker_url="http://127.0.0.1:9/flux",
        sdxl_worker_url="http://127.0.0.1:9/sdxl",
        sdxl_api_key="test-key-not-real",
        llm_provider="none",
        **{"image_user_limits": "off", "image_user_max_pending": 10, **extra},
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
        yield Chat(app, chat, generator, outcomes)
    finally:
        if generator.gate is not None:
            generator.gate.set()
        await app.aclose()


async def one_image(chat: Chat, text: str = "/image=flux=a red fox --seed 5") -> tuple[str, int]:
    """Make one image; its job id and the id of the message that carries it."""
    await chat.say(text)
    await chat.settle()
    image = chat.chat.of_kind("image")[-1]
    job_id = chat.outcomes[-1].job_id
    assert job_id is not None
    return job_id, image.message_id


# -- actions offered ------------------------------------------------------------------


async def test_an_image_offers_again_and_file_and_a_waiting_status_offers_cancel(
    tmp_path: Path,
) -> None:
    async with running(tmp_path) as chat:
        chat.generator.gate = asyncio.Event()
        await chat.say("/image=flux=a red fox")
        await until(lambda: chat.chat.of_kind("send"), waiting_for="the status", within_s=10)
        [status] = chat.chat.of_kind("send")
        job_id = chat.app.queues.jobs_of("ann")[0][0].id
        assert status.actions == (Action("cancel", job_id),)
        chat.generator.gate.set()
        await chat.settle()
        [image] = chat.chat.of_kind("image")
        assert image.actions == (Action("again", job_id), Action("file", job_id))
        # Sent as a file already: only "again" is worth offering.
        await chat.say("/image=flux=a blue whale --file")
        await chat.settle()
        whale = chat.chat.of_kind("image")[-1]
        assert [a.kind for a in whale.actions] == ["again"]


# -- pressing -------------------------------------------------------------------------


async def test_again_makes_a_new_job_from_the_same_prompt_with_a_new_seed(tmp_path: Path) -> None:
    async with running(tmp_path) as chat:
        job_id, image_id = await one_image(chat)
        answer = await chat.press(image_id, Action("again", job_id))
        await chat.settle()
        assert answer == ActionAnswer("🔁 Making another one.")
        assert len(chat.generator.calls) == 2
        first, second = (params for _, params in chat.generator.calls)
        assert second.prompt == first.prompt
        assert second.seed != first.seed
        # The new image answers the one whose button was pressed.
        assert chat.chat.of_kind("image")[-1].reply_to == image_id
        assert chat.outcomes[-1].job_id != job_id


async def test_again_goes_through_admission_a_user_at_their_limit_is_refused(
    tmp_path: Path,
) -> None:
    async with running(tmp_path, image_user_limits="1/1h") as chat:
        job_id, image_id = await one_image(chat)
        answer = await chat.press(image_id, Action("again", job_id))
        assert answer.alert
        assert answer.text is not None
        assert answer.text.startswith("You have reached")
        await chat.settle()
        assert len(chat.generator.calls) == 1


async def test_a_press_from_anyone_else_is_told_so_and_changes_nothing(tmp_path: Path) -> None:
    async with running(tmp_path) as chat:
        job_id, image_id = await one_image(chat)
        events_before = list(chat.chat.events)
        for kind in ("again", "file", "cancel"):
            answer = await chat.press(image_id, Action(kind, job_id), user="mallory")  # type: ignore[arg-type]
            assert answer == ActionAnswer(NOT_YOURS)
        await chat.settle()
        assert chat.chat.events == events_before
        assert len(chat.generator.calls) == 1


async def test_file_sends_the_kept_image_as_a_document(tmp_path: Path) -> None:
    async with running(tmp_path) as chat:
        job_id, image_id = await one_image(chat)
        answer = await chat.press(image_id, Action("file", job_id))
        assert answer == ActionAnswer("📄 Sent as a file.")
        photo, document = chat.chat.of_kind("image")
        assert document.image is not None
        assert document.image.as_file
        assert photo.image is not None
        assert document.image.image.data == photo.image.image.data
        assert document.reply_to == image_id
        assert len(chat.generator.calls) == 1


async def test_cancel_from_the_status_ends_the_waiting_job(tmp_path: Path) -> None:
    async with running(tmp_path) as chat:
        chat.generator.gate = asyncio.Event()
        await chat.say("/image=flux=first")
        await chat.say("/image=flux=second")  # waits behind the first
        await until(lambda: len(chat.chat.of_kind("send")) == 2, waiting_for="both statuses")
        waiting = chat.app.queues.jobs_of("ann")[-1][0]
        status_id = chat.app.status.message_id(waiting.id)
        assert status_id is not None
        answer = await chat.press(status_id, Action("cancel", waiting.id))
        assert answer.text == f"🚫 Cancelled job {waiting.id} (Flux)."
        chat.generator.gate.set()
        await chat.settle()
        assert {o.job_id: o.ok for o in chat.outcomes}[waiting.id] is False
        assert len(chat.generator.calls) == 1


async def test_a_press_on_an_old_image_still_works_after_a_restart(tmp_path: Path) -> None:
    async with running(tmp_path) as before:
        job_id, image_id = await one_image(before)
    async with running(tmp_path) as after:
        answer = await after.press(image_id, Action("again", job_id))
        await after.settle()
        assert answer == ActionAnswer("🔁 Making another one.")
        [(_, params)] = after.generator.calls
        assert params.prompt == "a red fox"
        assert params.seed != 5
        refused = await after.press(image_id, Action("again", job_id), user="mallory")
        assert refused == ActionAnswer(NOT_YOURS)


async def test_a_press_on_a_forgotten_job_says_so(tmp_path: Path) -> None:
    async with running(tmp_path) as chat:
        answer = await chat.press(7, Action("again", "abc123"))
        assert answer.alert
        assert answer.text is not None
        assert answer.text.startswith("You have no image abc123")


# -- the same by reply (user accounts) ------------------------------------------------


async def test_again_and_file_as_a_reply_to_the_image(tmp_path: Path) -> None:
    async with running(tmp_path) as chat:
        _, image_id = await one_image(chat)
        again = await chat.say("/image again", reply_to=image_id)
        await chat.settle()
        assert len(chat.generator.calls) == 2
        assert chat.chat.of_kind("image")[-1].reply_to == again
        as_file = await chat.say("/image file", reply_to=image_id)
        await chat.settle()
        sent = chat.chat.of_kind("image")[-1]
        assert sent.reply_to == as_file
        assert sent.image is not None
        assert sent.image.as_file
        assert len(chat.generator.calls) == 2


async def test_a_reply_to_no_image_or_someone_elses_is_refused(tmp_path: Path) -> None:
    async with running(tmp_path) as chat:
        job_id, image_id = await one_image(chat)
        bare = await chat.say("/image again")
        assert chat.replies(bare) == [
            "❌ Send /image again as a reply to one of your images, or name the image: "
            "/image again <id> (your images and their ids: /image history)."
        ]
        stranger = await chat.say("/image file", user="mallory", reply_to=image_id)
        assert chat.replies(stranger) == [
            f"❌ You have no image {job_id}. See your images and their ids with /image history."
        ]
        assert len(chat.generator.calls) == 1


# -- per-chat defaults ----------------------------------------------------------------


async def test_defaults_apply_to_every_request_and_a_requests_own_flags_win(
    tmp_path: Path,
) -> None:
    async with running(tmp_path) as chat:
        set_ar = await chat.say("/image set ar 16:9", owner=True)
        assert chat.replies(set_ar) == [
            "✅ Every image in this chat now gets --ar 16:9 unless the request says "
            "otherwise. flux does not take --ar: skipped there. /image set shows all defaults."
        ]
        await chat.say("/image set style artistic", owner=True)
        await chat.say("/image set raw on", owner=True)
        await chat.say("/image=sdxl=a lighthouse")
        await chat.say("/image=sdxl=a lighthouse at night --ar 9:16 --style anime")
        await chat.say("/image=flux=a fox")  # flux takes no --ar: skipped, no error
        await chat.settle()
        assert [o.ok for o in chat.outcomes] == [True, True, True]
        (_, plain), (_, own), (flux, fox) = chat.generator.calls
        assert (plain.width, plain.height) == (1344, 768)
        assert "painterly" in plain.prompt  # the artistic style's words
        assert (own.width, own.height) == (768, 1344)
        assert "anime style" in own.prompt
        assert "painterly" not in own.prompt
        assert flux == "flux"
        assert "painterly" in fox.prompt
        shown = await chat.say("/image set", user="bob")
        [text] = chat.replies(shown)
        assert text.startswith("Defaults in this chat: --ar 16:9 --raw --style artistic")
        assert "--ar 16:9 is skipped for flux" in text


async def test_defaults_are_kept_across_a_restart_and_reset_clears_them(tmp_path: Path) -> None:
    async with running(tmp_path) as before:
        await before.say("/image set style anime", owner=True)
    async with running(tmp_path) as after:
        await after.say("/image=flux=a fox")
        await after.settle()
        [(_, params)] = after.generator.calls
        assert "anime style" in params.prompt
        reset = await after.say("/image set reset", owner=True)
        assert after.replies(reset) == ["🧹 This chat's defaults are cleared (1 removed)."]
        shown = await after.say("/image set")
        assert after.replies(shown)[0].startswith("This chat has no default flags.")


async def test_only_the_owner_and_named_users_change_defaults(tmp_path: Path) -> None:
    async with running(tmp_path) as chat:
        stranger = await chat.say("/image set raw on", user="mallory")
        assert chat.replies(stranger) == [
            "❌ Only the bot's owner, or someone the owner lists in ALLOWED_USER_IDS, can "
            "change this chat's defaults. /image set shows them; your own flags always win."
        ]
        await chat.say("/image set reset", user="mallory")
        named = await chat.say("/image set raw on", user="friend", named=True)
        assert chat.replies(named)[0].startswith("✅ Every image in this chat now gets --raw")
        cleared = await chat.say("/image set raw off", owner=True, user="me")
        assert chat.replies(cleared) == ["✅ This chat no longer has a default for --raw."]
        # Another chat has its own defaults.
        await chat.say("/image set style anime", owner=True, user="me")
        assert await chat.app.store.chat_defaults("elsewhere") == {}
        assert await chat.app.store.chat_defaults("group") == {"style": Style.ANIME.value}

"""Inline buttons on Telegram: drawn for bot accounts only, pressed as real Telethon events.

Presses are real ``events.CallbackQuery.Event`` objects built from a
``types.UpdateBotCallbackQuery``, finished on the recording client the way
Telethon's dispatch does; their answer is the ``SetBotCallbackAnswerRequest``
the client receives.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from telethon.tl import functions, types

from sakaibot.app import App, build_app
from sakaibot.captions import Caption, CaptionPart
from sakaibot.chat.port import Action, OutgoingImage
from sakaibot.chat.telegram import (
    AccessPolicy,
    TelegramChat,
    TelegramFrontEnd,
    action_data,
    action_of,
    edit_interval_for,
)
from sakaibot.pipeline import JobOutcome
from sakaibot.settings import load_settings
from tests.support.fakes import FakeClock, FakeGenerator, tiny_image
from tests.support.telegram_fakes import (
    OWNER_ID,
    RecordingTelegramClient,
    make_event,
    make_press,
)
from tests.support.waiting import until_idle

BOT_ACCOUNT = 4_000_004
STRANGER = 3_000_003
GROUP = types.PeerChat(555)
NOT_YOURS = "Only the person who asked for this image can use its buttons."


def outgoing(actions: tuple[Action, ...]) -> OutgoingImage:
    return OutgoingImage(
        image=tiny_image(),
        caption=Caption((CaptionPart("a fox"),)),
        filename="sakaibot-flux-abc123.jpg",
        as_file=False,
        actions=actions,
    )


def button_rows(buttons: Any) -> list[list[tuple[str, bytes]]]:
    return [[(button.text, button.type.data) for button in row] for row in buttons]


# -- the button's data ------------------------------------------------------------------


def test_button_data_names_the_action_and_the_job_and_reads_back() -> None:
    for kind in ("again", "file", "cancel"):
        action = Action(kind, "abc123")  # type: ignore[arg-type]
        data = action_data(action)
        assert data == f"{kind}:abc123".encode()
        assert len(data) <= 64
        assert action_of(data) == action


@pytest.mark.parametrize(
    "data",
    [None, b"", b"again", b"again:", b"zap:abc123", b"again:ab cd", b"again:\xff", b"a" * 65],
)
def test_data_that_is_not_one_of_our_buttons_is_no_action(data: bytes | None) -> None:
    assert action_of(data) is None


# -- drawn for bot accounts only -----------------------------------------------------------


async def test_a_bot_account_draws_the_actions_as_one_row_of_buttons() -> None:
    client = RecordingTelegramClient(self_id=BOT_ACCOUNT)
    chat = TelegramChat(client, bot_account=True)
    actions = (Action("again", "abc123"), Action("file", "abc123"))
    await chat.send_image(str(OWNER_ID), outgoing(actions), reply_to=7)
    status = await chat.send_text(
        str(OWNER_ID), "⏳ Queued", reply_to=7, actions=(Action("cancel", "def456"),)
    )
    await chat.edit_text(str(OWNER_ID), status, "📤 Sending…")
    [upload] = client.of("send_file")
    assert button_rows(upload.kwargs["buttons"]) == [
        [("🔁 Again", b"again:abc123"), ("📄 As file", b"file:abc123")]
    ]
    [sent] = client.of("send_message")
    assert button_rows(sent.kwargs["buttons"]) == [[("❌ Cancel", b"cancel:def456")]]
    # An edit without actions takes the buttons away (none stays under a sent image's status).
    [edit] = client.of("edit_message")
    assert edit.kwargs["buttons"] is None


async def test_a_user_account_never_sends_buttons() -> None:
    client = RecordingTelegramClient()
    chat = TelegramChat(client, bot_account=False)
    await chat.send_image(str(OWNER_ID), outgoing((Action("again", "abc123"),)), reply_to=7)
    status = await chat.send_text(
        str(OWNER_ID), "⏳ Queued", reply_to=7, actions=(Action("cancel", "abc123"),)
    )
    await chat.edit_text(str(OWNER_ID), status, "🎨 Generating", actions=())
    assert all("buttons" not in call.kwargs for call in client.calls)


# -- pressed --------------------------------------------------------------------------------


@dataclass
class BotHarness:
    app: App
    client: RecordingTelegramClient
    generator: FakeGenerator
    front: TelegramFrontEnd
    outcomes: list[JobOutcome] = field(default_factory=list)

    async def say(self, text: str) -> int:
        event = make_event(self.client, text=text, chat=GROUP, sender_id=OWNER_ID)
        await asyncio.wait_for(self.front.on_new_message(event), timeout=5)
        await until_idle(self.app)
        return int(event.message.id)

    async def press(self, data: bytes, *, message_id: int, sender: int = OWNER_ID) -> Any:
        """Press the button; the answer the client was sent."""
        event = make_press(self.client, data=data, chat=GROUP, sender_id=sender, msg_id=message_id)
        await asyncio.wait_for(self.front.on_callback(event), timeout=5)
        await until_idle(self.app)
        [answer] = [
            call.kwargs["request"]
            for call in self.client.of("SetBotCallbackAnswerRequest")
            if call.kwargs["request"].query_id == event.query.query_id
        ]
        assert isinstance(answer, functions.messages.SetBotCallbackAnswerRequest)
        return answer


@contextlib.asynccontextmanager
async def bot_app() -> AsyncIterator[BotHarness]:
    settings = load_settings(env_file=None, flux_worker_url="http://127.0.0.1:9/flux")
    clock = FakeClock()
    client = RecordingTelegramClient(self_id=BOT_ACCOUNT, clock=clock)
    generator = FakeGenerator()
    outcomes: list[JobOutcome] = []
    app = build_app(
        settings,
        TelegramChat(client, bot_account=True),
        on_outcome=outcomes.append,
        generator=generator,
        clock=clock,
        sleep=clock.sleep,
        edit_interval_s=edit_interval_for(settings),
    )
    policy = AccessPolicy(
        owner_id=OWNER_ID, userbot=False, allowed_chat_ids=frozenset({-GROUP.chat_id})
    )
    front = TelegramFrontEnd(handle=app.bot.handle, policy=policy, press=app.bot.handle_action)
    await app.start()
    try:
        yield BotHarness(app, client, generator, front, outcomes)
    finally:
        await app.aclose()


async def test_a_press_on_again_makes_a_new_image_and_is_answered() -> None:
    async with bot_app() as h:
        await h.say("/image=flux=a red fox")
        [upload] = h.client.of("send_file")
        job_id = h.outcomes[-1].job_id
        assert upload.message_id is not None
        answer = await h.press(f"again:{job_id}".encode(), message_id=upload.message_id)
        assert (answer.message, answer.alert) == ("🔁 Making another one.", False)
        assert len(h.generator.calls) == 2
        second = h.client.of("send_file")[-1]
        assert second.kwargs["reply_to"] == upload.message_id


async def test_a_press_from_someone_else_is_answered_with_a_notice_only() -> None:
    async with bot_app() as h:
        await h.say("/image=flux=a red fox")
        [upload] = h.client.of("send_file")
        assert upload.message_id is not None
        calls_before = len(h.client.calls)
        data = f"file:{h.outcomes[-1].job_id}".encode()
        answer = await h.press(data, message_id=upload.message_id, sender=STRANGER)
        assert (answer.message, answer.alert) == (NOT_YOURS, False)
        # Nothing but the answer reached Telegram.
        assert [c.name for c in h.client.calls[calls_before:]] == ["SetBotCallbackAnswerRequest"]
        assert len(h.generator.calls) == 1


async def test_a_refused_press_is_answered_in_a_dialog_and_a_stray_one_silently() -> None:
    async with bot_app() as h:
        answer = await h.press(b"again:abc123", message_id=9)
        assert answer.alert
        assert answer.message.startswith("You have no image abc123.")
        assert len(answer.message) <= 200
        stray = await h.press(b"somebody-elses-button", message_id=9)
        assert stray.message is None

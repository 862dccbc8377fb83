"""The Telethon adapter: who may command the bot, and what Telegram receives.

Messages are real Telethon messages finished on a recording client, so the
access checks see ``.out``, ``.sender``, ``.fwd_from`` and friends exactly as
Telethon computes them. Nothing here connects anywhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from telethon import TelegramClient, errors
from telethon.crypto import AuthKey
from telethon.extensions import html as telethon_html
from telethon.sessions import SQLiteSession, StringSession
from telethon.tl import types

from sakaibot.app import App, build_app
from sakaibot.captions import Caption, CaptionPart, utf16_length
from sakaibot.chat.port import IncomingMessage, OutgoingImage
from sakaibot.chat.telegram import (
    PHOTO_MAX_BYTES,
    AccessPolicy,
    TelegramChat,
    TelegramFrontEnd,
    build_client,
    edit_interval_for,
    export_string_session,
    fits_as_photo,
    incoming_from,
    input_file_of,
    session_lock,
    telegram_errors,
    upload_ref_of,
)
from sakaibot.errors import ChatError, ConfigError, FloodWait, MessageNotModified
from sakaibot.generation import GeneratedImage
from sakaibot.pipeline import JobOutcome
from sakaibot.settings import load_settings
from tests.support.fakes import FakeClock, FakeEnhancer, FakeGenerator, tiny_image
from tests.support.telegram_fakes import (
    OWNER_ID,
    RecordingHandle,
    RecordingTelegramClient,
    make_event,
    make_message,
)
from tests.support.waiting import app_work, until, until_idle

FRIEND = 2_000_002  # on ALLOWED_USER_IDS where a test says so
STRANGER = 3_000_003
BOT_ACCOUNT = 4_000_004  # the bot's own account in bot mode
HELPER_BOT = 5_000_005  # some other bot
GROUP = types.PeerChat(555)  # marked id -555
SUPERGROUP = types.PeerChannel(1_234_567_890)  # marked id -1001234567890
CHANNEL = types.PeerChannel(987_654)

USERBOT = AccessPolicy(owner_id=OWNER_ID, userbot=True)
UNSENDABLE = re.compile(
    r"❌ The image was made but could not be sent\. It is kept for 24 h: "
    r"send /image retry [0-9a-f]{6} to try again\."
)


# -- who may use the bot ---------------------------------------------------------


def test_the_owners_own_message_is_a_command_in_a_userbot() -> None:
    client = RecordingTelegramClient()
    message = make_message(
        client, text="/image=flux=a fox", chat=types.PeerUser(FRIEND), sender_id=OWNER_ID, out=True
    )
    incoming = incoming_from(message, USERBOT)
    assert incoming == IncomingMessage(
        chat_id=str(FRIEND),
        message_id=message.id,
        user_id=str(OWNER_ID),
        text="/image=flux=a fox",
        chat_address=f"user:{FRIEND}:{FRIEND * 7}",
        reply_to_message_id=None,
        from_owner=True,
        from_named_user=True,
    )


def test_the_owners_saved_messages_are_commands_too() -> None:
    client = RecordingTelegramClient()
    # Telethon marks messages in "Saved Messages" as outgoing itself.
    message = make_message(
        client, text="/image models", chat=types.PeerUser(OWNER_ID), sender_id=OWNER_ID, out=False
    )
    assert message.out is True
    incoming = incoming_from(message, USERBOT)
    assert incoming is not None
    assert incoming.chat_id == str(OWNER_ID)


@pytest.mark.parametrize(
    "chat",
    [types.PeerUser(STRANGER), GROUP, SUPERGROUP],
    ids=["private", "group", "supergroup"],
)
async def test_a_strangers_command_is_ignored_without_a_word(
    chat: types.PeerUser | types.PeerChat | types.PeerChannel,
) -> None:
    client = RecordingTelegramClient()
    handle = RecordingHandle()
    front = TelegramFrontEnd(handle=handle, policy=USERBOT)
    await front.on_new_message(
        make_event(client, text="/image=flux=a fox", chat=chat, sender_id=STRANGER)
    )
    assert handle.received == []
    assert client.calls == []


async def test_a_stranger_costs_nothing_in_a_running_bot() -> None:
    async with telegram_app(image_user_limits="1/1h") as h:
        await h.say("/image=flux=a fox", chat=types.PeerUser(STRANGER), sender=STRANGER)
        await h.say("/image models", chat=GROUP, sender=STRANGER)
        assert h.client.calls == []
        assert h.app.queues.live_job_count() == 0
        # The same command from the owner is taken, and does count.
        command = await h.say("/image=flux=a fox")
        await h.finish()
        # Everything Telegram received was for the owner's command, in the owner's chat.
        assert {call.chat_id for call in h.client.calls} == {FRIEND}
        assert len(h.client.of("send_file", ok=True)) == 1
        assert [o.reply_to for o in h.outcomes] == [command]
        assert h.app.limiter.check(str(OWNER_ID)) is not None
        # With one image an hour, an accepted command would have used the slot up.
        assert h.app.limiter.check(str(STRANGER)) is None


@pytest.mark.parametrize(
    "chat",
    [types.PeerUser(FRIEND), GROUP],
    ids=["private", "group"],
)
def test_a_user_on_allowed_user_ids_is_served(
    chat: types.PeerUser | types.PeerChat,
) -> None:
    client = RecordingTelegramClient()
    policy = AccessPolicy(owner_id=OWNER_ID, userbot=True, allowed_user_ids=frozenset({FRIEND}))
    message = make_message(client, text="/image=flux=a fox", chat=chat, sender_id=FRIEND)
    incoming = incoming_from(message, policy)
    assert incoming is not None
    assert incoming.user_id == str(FRIEND)
    # Someone else in the same situation is not served.
    elsewhere = chat if isinstance(chat, types.PeerChat) else types.PeerUser(STRANGER)
    stranger = make_message(client, text="/image=flux=a fox", chat=elsewhere, sender_id=STRANGER)
    assert incoming_from(stranger, policy) is None


def test_anyone_in_a_chat_on_allowed_chat_ids_is_served() -> None:
    client = RecordingTelegramClient()
    policy = AccessPolicy(
        owner_id=OWNER_ID, userbot=True, allowed_chat_ids=frozenset({-1_001_234_567_890})
    )
    inside = make_message(client, text="/image=flux=a fox", chat=SUPERGROUP, sender_id=STRANGER)
    elsewhere = make_message(client, text="/image=flux=a fox", chat=GROUP, sender_id=STRANGER)
    incoming = incoming_from(inside, policy)
    assert incoming is not None
    assert (incoming.chat_id, incoming.user_id) == ("-1001234567890", str(STRANGER))
    assert incoming_from(elsewhere, policy) is None


ALLOW_FRIEND = AccessPolicy(
    owner_id=OWNER_ID,
    userbot=True,
    allowed_user_ids=frozenset({FRIEND, HELPER_BOT}),
    allowed_chat_ids=frozenset({-555}),
)


@pytest.mark.parametrize(
    "fields",
    [
        # A bot, even one on ALLOWED_USER_IDS and in an allowed chat.
        {"chat": GROUP, "sender_id": HELPER_BOT, "sender_is_bot": True},
        {"chat": types.PeerUser(HELPER_BOT), "sender_id": HELPER_BOT, "sender_is_bot": True},
        # A channel post, even the owner's own.
        {"chat": CHANNEL, "sender_id": OWNER_ID, "out": True, "post": True},
        # A forwarded message, even one the owner forwarded.
        {"chat": types.PeerUser(FRIEND), "sender_id": OWNER_ID, "out": True, "fwd": True},
        {"chat": GROUP, "sender_id": FRIEND, "fwd": True},
        # A message sent through an inline bot, even by the owner.
        {"chat": GROUP, "sender_id": OWNER_ID, "out": True, "via_bot_id": HELPER_BOT},
        {"chat": types.PeerUser(FRIEND), "sender_id": FRIEND, "via_bot_id": HELPER_BOT},
    ],
    ids=[
        "allowed-bot-in-group",
        "allowed-bot-private",
        "owners-channel-post",
        "owners-forward",
        "friends-forward",
        "owners-via-bot",
        "friends-via-bot",
    ],
)
async def test_bots_posts_forwards_and_via_bot_messages_are_ignored(
    fields: dict[str, Any],
) -> None:
    client = RecordingTelegramClient()
    handle = RecordingHandle()
    front = TelegramFrontEnd(handle=handle, policy=ALLOW_FRIEND)
    message = make_message(client, text="/image=flux=a fox", **fields)
    assert incoming_from(message, ALLOW_FRIEND) is None
    await front.on_new_message(make_event(client, text="/image=flux=a fox", **fields))
    assert handle.received == []
    assert client.calls == []
    # The same message without the disqualifying trait is served.
    plain = {
        k: v for k, v in fields.items() if k not in {"sender_is_bot", "post", "fwd", "via_bot_id"}
    }
    if not fields.get("sender_is_bot"):
        assert incoming_from(make_message(client, text="/image=flux=x", **plain), ALLOW_FRIEND)


@pytest.mark.parametrize(
    "text", ["hello", "", "please /image=flux=a fox", "image=flux=a fox", " /imag"]
)
def test_text_that_is_not_an_image_command_is_ignored(text: str) -> None:
    client = RecordingTelegramClient()
    message = make_message(
        client, text=text, chat=types.PeerUser(FRIEND), sender_id=OWNER_ID, out=True
    )
    assert incoming_from(message, USERBOT) is None


async def test_chatter_from_the_owner_gets_no_reply() -> None:
    async with telegram_app() as h:
        await h.say("hello there")
        await h.say("/imagine a cat")
        await h.finish()
        assert h.client.calls == []
        assert h.outcomes == []


def test_bot_mode_serves_the_owner_and_not_itself() -> None:
    client = RecordingTelegramClient(self_id=BOT_ACCOUNT)
    policy = AccessPolicy(owner_id=OWNER_ID, userbot=False)
    from_owner = make_message(
        client, text="/image=flux=a fox", chat=types.PeerUser(OWNER_ID), sender_id=OWNER_ID
    )
    incoming = incoming_from(from_owner, policy)
    assert incoming is not None
    assert (incoming.chat_id, incoming.user_id) == (str(OWNER_ID), str(OWNER_ID))
    # The bot's own outgoing messages are not commands (it is not a userbot).
    own = make_message(
        client,
        text="/image=flux=a fox",
        chat=types.PeerUser(OWNER_ID),
        sender_id=BOT_ACCOUNT,
        out=True,
    )
    assert own.out is True
    assert incoming_from(own, policy) is None
    stranger = make_message(
        client, text="/image=flux=a fox", chat=types.PeerUser(STRANGER), sender_id=STRANGER
    )
    assert incoming_from(stranger, policy) is None


def test_incoming_message_fields_use_marked_ids() -> None:
    client = RecordingTelegramClient()
    policy = AccessPolicy(owner_id=OWNER_ID, userbot=True, allowed_user_ids=frozenset({FRIEND}))
    in_group = make_message(
        client,
        text="/image cancel",
        chat=GROUP,
        sender_id=FRIEND,
        reply_to_msg_id=321,
        msg_id=77,
    )
    in_supergroup = make_message(
        client, text="/image status", chat=SUPERGROUP, sender_id=FRIEND, msg_id=78
    )
    assert incoming_from(in_group, policy) == IncomingMessage(
        chat_id="-555",
        message_id=77,
        user_id=str(FRIEND),
        text="/image cancel",
        reply_to_message_id=321,
        chat_address="chat:555",
        from_named_user=True,
    )
    assert incoming_from(in_supergroup, policy) == IncomingMessage(
        chat_id="-1001234567890",
        message_id=78,
        user_id=str(FRIEND),
        text="/image status",
        reply_to_message_id=None,
        chat_address=f"channel:{SUPERGROUP.channel_id}:{SUPERGROUP.channel_id * 11}",
        from_named_user=True,
    )


def test_owner_commands_check_the_sender_not_the_chat() -> None:
    client = RecordingTelegramClient()
    allowed_chat = AccessPolicy(owner_id=OWNER_ID, userbot=True, allowed_chat_ids=frozenset({-555}))
    friend = make_message(client, text="/image stats", chat=types.PeerChat(555), sender_id=FRIEND)
    owner = make_message(
        client, text="/image stats", chat=types.PeerChat(555), sender_id=OWNER_ID, out=True
    )
    friend_in = incoming_from(friend, allowed_chat)
    owner_in = incoming_from(owner, allowed_chat)
    assert friend_in is not None
    assert owner_in is not None
    assert friend_in.from_owner is False
    assert owner_in.from_owner is True
    bot_mode = AccessPolicy(owner_id=OWNER_ID, userbot=False)
    from_owner_to_bot = make_message(
        client, text="/image stats", chat=types.PeerUser(OWNER_ID), sender_id=OWNER_ID
    )
    owner_to_bot = incoming_from(from_owner_to_bot, bot_mode)
    assert owner_to_bot is not None
    assert owner_to_bot.from_owner is True


async def test_a_failing_handler_does_not_take_the_front_end_down(
    caplog: pytest.LogCaptureFixture,
) -> None:
    client = RecordingTelegramClient()

    async def broken(message: IncomingMessage) -> bool:
        raise RuntimeError("boom")

    front = TelegramFrontEnd(handle=broken, policy=USERBOT)
    event = make_event(
        client, text="/image=flux=x", chat=types.PeerUser(FRIEND), sender_id=OWNER_ID, out=True
    )
    await front.on_new_message(event)
    assert any("handling message" in record.getMessage() for record in caplog.records)


# -- the whole bot on Telegram ----------------------------------------------------


@dataclass
class TelegramHarness:
    app: App
    client: RecordingTelegramClient
    clock: FakeClock
    generator: FakeGenerator
    front: TelegramFrontEnd
    outcomes: list[JobOutcome] = field(default_factory=list)

    async def say(
        self,
        text: str,
        *,
        chat: types.PeerUser | types.PeerChat | types.PeerChannel = types.PeerUser(FRIEND),  # noqa: B008
        sender: int = OWNER_ID,
        reply_to: int | None = None,
    ) -> int:
        """A message in a chat; by default the owner writing to a friend."""
        event = make_event(
            self.client,
            text=text,
            chat=chat,
            sender_id=sender,
            out=sender == OWNER_ID,
            reply_to_msg_id=reply_to,
        )
        await asyncio.wait_for(self.front.on_new_message(event), timeout=5)
        return int(event.message.id)

    async def finish(self) -> None:
        await asyncio.wait_for(self.app.drain(), timeout=5)

    async def finish_jobs(self) -> None:
        """Let the jobs so far finish, without stopping the bot."""
        await until_idle(self.app)

    def status_messages_for(self, command_id: int) -> list[int]:
        """Ids of the text messages sent in reply to ``command_id``."""
        return [
            call.message_id
            for call in self.client.of("send_message", ok=True)
            if call.kwargs["reply_to"] == command_id and call.message_id is not None
        ]


@contextlib.asynccontextmanager
async def telegram_app(
    policy: AccessPolicy = USERBOT, **overrides: Any
) -> AsyncIterator[TelegramHarness]:
    values: dict[str, Any] = {
        "flux_worker_url": "http://127.0.0.1:9/flux",
        "status_edit_interval_s": 3.0,
    }
    values.update(overrides)
    settings = load_settings(env_file=None, **values)
    clock = FakeClock()
    client = RecordingTelegramClient(clock=clock)
    generator = FakeGenerator()
    outcomes: list[JobOutcome] = []
    app = build_app(
        settings,
        TelegramChat(client),
        on_outcome=outcomes.append,
        generator=generator,
        enhancer=FakeEnhancer(),
        clock=clock,
        sleep=clock.sleep,
        edit_interval_s=edit_interval_for(settings),
    )
    front = TelegramFrontEnd(handle=app.bot.handle, policy=policy)
    harness = TelegramHarness(app, client, clock, generator, front, outcomes)
    await app.start()
    try:
        yield harness
    finally:
        if harness.generator.gate is not None:
            harness.generator.gate.set()
        await app.aclose()


PROMPT = 'a <b>fox</b> & "cat" روباه 🦊'


async def test_the_image_arrives_as_an_html_photo_replying_to_the_command() -> None:
    async with telegram_app() as h:
        command = await h.say(f"/image=flux={PROMPT} --raw")
        await h.finish()

        [upload] = h.client.of("send_file")
        assert upload.ok
        assert upload.chat_id == FRIEND
        assert upload.entity == types.InputPeerUser(FRIEND, FRIEND * 7)  # by its address
        assert upload.kwargs["reply_to"] == command
        assert upload.kwargs["parse_mode"] == "html"
        assert upload.kwargs["force_document"] is False
        assert upload.file_name is not None
        assert upload.file_name.endswith(".jpg")
        assert upload.file_bytes == tiny_image().data
        assert upload.file_bytes[:3] == b"\xff\xd8\xff"  # really a JPEG

        caption = upload.kwargs["caption"]
        assert 'a &lt;b&gt;fox&lt;/b&gt; &amp; "cat" روباه 🦊' in caption
        assert "<b>fox</b>" not in caption
        # What the user sees once Telegram has parsed the HTML: the prompt as typed,
        # and only the model's name in bold.
        visible, entities = telethon_html.parse(caption)
        assert visible.startswith("🎨 Flux · prompt: original prompt · ")
        assert visible.endswith(f"\n\n{PROMPT}")
        assert [type(e) for e in entities] == [types.MessageEntityBold]
        bold = entities[0]
        # Entity offsets count UTF-16 units, as Telegram does.
        as_utf16 = visible.encode("utf-16-le")
        bold_text = as_utf16[bold.offset * 2 : (bold.offset + bold.length) * 2]
        assert bold_text.decode("utf-16-le") == "Flux"

        # The status went out as plain text in reply to the command, and is gone.
        statuses = h.status_messages_for(command)
        assert len(statuses) == 1
        for call in h.client.of("send_message") + h.client.of("edit_message"):
            assert call.kwargs["parse_mode"] is None
            assert call.kwargs["link_preview"] is False
        assert [call.kwargs["ids"] for call in h.client.of("delete_messages")] == [statuses]
        assert h.client.texts == {}

        [outcome] = h.outcomes
        assert outcome.ok
        assert outcome.image_message_id == upload.message_id


@pytest.mark.parametrize(("flag", "as_document"), [("", False), (" --file", True)])
async def test_file_flag_sends_a_document(flag: str, as_document: bool) -> None:
    async with telegram_app() as h:
        await h.say(f"/image=flux=a fox{flag}")
        await h.finish()
        [upload] = h.client.of("send_file", ok=True)
        assert upload.kwargs["force_document"] is as_document
        assert upload.file_name is not None
        assert upload.file_name.endswith(".jpg")


async def test_a_group_on_allowed_chat_ids_gets_its_image_in_the_group() -> None:
    policy = AccessPolicy(owner_id=OWNER_ID, userbot=True, allowed_chat_ids=frozenset({-555}))
    async with telegram_app(policy) as h:
        command = await h.say("/image=flux=a fox", chat=GROUP, sender=STRANGER)
        await h.finish()
        [upload] = h.client.of("send_file", ok=True)
        assert upload.chat_id == -555
        assert upload.entity == types.InputPeerChat(555)
        assert upload.kwargs["reply_to"] == command
        assert {call.chat_id for call in h.client.calls} == {-555}
        assert [o.user_id for o in h.outcomes] == [str(STRANGER)]


# -- photo or document -------------------------------------------------------------


def image_of(*, width: int, height: int, size_bytes: int = 1000) -> GeneratedImage:
    return GeneratedImage(
        data=bytes(size_bytes), mime_type="image/png", extension=".png", width=width, height=height
    )


@pytest.mark.parametrize(
    ("image", "photo"),
    [
        (image_of(width=1024, height=1024), True),
        (image_of(width=1024, height=1024, size_bytes=PHOTO_MAX_BYTES), True),
        (image_of(width=1024, height=1024, size_bytes=PHOTO_MAX_BYTES + 1), False),
        (image_of(width=5000, height=5000), True),
        (image_of(width=5000, height=5001), False),
        (image_of(width=2000, height=100), True),  # 20:1 exactly
        (image_of(width=100, height=2001), False),  # a bit over 20:1, tall
        (image_of(width=2100, height=100), False),
    ],
    ids=[
        "normal",
        "exactly-10MB",
        "over-10MB",
        "sides-10000",
        "sides-over-10000",
        "aspect-20",
        "aspect-over-20-tall",
        "aspect-over-20-wide",
    ],
)
def test_fits_as_photo_follows_telegrams_limits(image: GeneratedImage, photo: bool) -> None:
    assert fits_as_photo(image) is photo


def outgoing(image: GeneratedImage, *, as_file: bool = False) -> OutgoingImage:
    return OutgoingImage(
        image=image,
        caption=Caption((CaptionPart("Flux", bold=True), CaptionPart(" x < y"))),
        filename=f"pic{image.extension}",
        as_file=as_file,
    )


async def test_an_image_telegram_would_refuse_as_a_photo_goes_as_a_document() -> None:
    client = RecordingTelegramClient()
    chat = TelegramChat(client)
    panorama = dataclasses.replace(tiny_image("PNG"), width=4200, height=200)
    message_id = await chat.send_image("-555", outgoing(panorama), reply_to=9)
    normal_id = await chat.send_image("-555", outgoing(tiny_image("PNG")), reply_to=10)
    first, second = client.of("send_file")
    assert (first.message_id, second.message_id) == (message_id, normal_id)
    assert first.kwargs["force_document"] is True
    assert second.kwargs["force_document"] is False
    assert first.file_name == "pic.png"
    assert first.file_bytes == panorama.data
    assert first.kwargs["caption"] == "<b>Flux</b> x &lt; y"
    assert first.chat_id == -555


# -- albums (--n) ---------------------------------------------------------------------


async def test_n_images_go_as_one_media_group_with_one_caption() -> None:
    async with telegram_app() as h:
        command = await h.say("/image=flux=a fox --n 3")
        await h.finish()
        [upload] = h.client.of("send_file", ok=True)
        assert upload.kwargs["reply_to"] == command
        assert upload.kwargs["force_document"] is False
        assert len(upload.kwargs["file_bytes"]) == 3
        first, *others = upload.kwargs["caption"]
        assert others == ["", ""]
        [outcome] = h.outcomes
        assert f"#{outcome.job_id}" in first
        assert "1: seed" in first
        assert outcome.image_message_id == upload.kwargs["message_ids"][0]


async def test_file_flag_sends_the_album_as_a_document_group() -> None:
    async with telegram_app() as h:
        await h.say("/image=flux=a fox --n 2 --file")
        await h.finish()
        [upload] = h.client.of("send_file", ok=True)
        assert upload.kwargs["force_document"] is True
        assert len(upload.kwargs["file_names"]) == 2


async def test_an_album_with_one_image_unfit_for_a_photo_goes_all_as_documents() -> None:
    client = RecordingTelegramClient()
    chat = TelegramChat(client)
    panorama = dataclasses.replace(tiny_image("PNG"), width=4200, height=200)
    caption = Caption((CaptionPart("album #ab12cd"),))
    ids = await chat.send_album(
        "-555", [outgoing(tiny_image("PNG")), outgoing(panorama)], caption, reply_to=9
    )
    [upload] = client.of("send_file")
    assert upload.kwargs["force_document"] is True
    assert upload.kwargs["caption"] == ["album #ab12cd", ""]
    assert ids == upload.kwargs["message_ids"]
    # After a crash the album is found by its tag, like a single image.
    assert await chat.find_delivered("-555", reply_to=9, job_id="ab12cd") == ids[0]
    with pytest.raises(ValueError, match="2 to 10"):
        await chat.send_album("-555", [outgoing(tiny_image())] * 11, caption, reply_to=9)


async def test_long_texts_are_cut_to_telegrams_limit() -> None:
    client = RecordingTelegramClient()
    chat = TelegramChat(client)
    await chat.send_text("42", "🦊" * 3000, reply_to=None)
    [call] = client.of("send_message")
    sent = call.kwargs["message"]
    assert utf16_length(sent) <= 4096
    assert sent.endswith("…")


# -- flood waits and refusals ------------------------------------------------------


async def test_a_flood_wait_on_a_status_edit_mutes_the_lane_and_the_job_completes() -> None:
    async with telegram_app() as h:
        h.generator.gate = asyncio.Event()
        command = await h.say("/image=flux=a fox")
        await asyncio.wait_for(h.app.status.drain(), timeout=5)
        [status_id] = h.status_messages_for(command)
        # The job is generating (held) and its status says so; the lane is idle.
        await until(
            lambda: h.client.texts.get(status_id, "").startswith("🎨"),
            waiting_for="the status to say the image is being generated",
            settle=app_work(h.app),
        )
        # Past the pacing interval, so the next status change is an edit at once.
        h.clock.advance(10)
        h.client.fail_next("edit_message", errors.FloodWaitError(request=None, capture=30))
        uploaded = asyncio.Event()
        send_file = h.client.send_file

        async def recorded_upload(*args: Any, **kwargs: Any) -> Any:
            sent = await send_file(*args, **kwargs)
            uploaded.set()
            return sent

        h.client.send_file = recorded_upload  # type: ignore[method-assign]
        h.clock.gate = asyncio.Event()  # the muted lane sleeps until we let it go
        h.generator.gate.set()
        # The image goes out while the lane is still muted: it did not wait for it.
        await asyncio.wait_for(uploaded.wait(), timeout=5)
        [refused] = h.client.of("edit_message", ok=False)
        assert isinstance(refused.raised, errors.FloodWaitError)
        lane_calls = [c for c in h.client.calls if c.name != "send_file"]
        assert lane_calls[-1] is refused
        h.clock.gate.set()
        await h.finish()

        assert h.app.status.counters.flood_waits == 1
        # Nothing reached the chat's lane during the wait; the status was then removed.
        lane_calls = [c for c in h.client.calls if c.name != "send_file"]
        after = lane_calls[lane_calls.index(refused) + 1 :]
        assert after
        assert all(call.at_s >= refused.at_s + 30 for call in after)
        assert after[-1].name == "delete_messages"
        assert after[-1].kwargs["ids"] == [status_id]
        assert [o.ok for o in h.outcomes] == [True]


async def test_message_not_modified_on_an_edit_counts_as_done() -> None:
    async with telegram_app() as h:
        h.generator.gate = asyncio.Event()
        command = await h.say("/image=flux=a fox")
        await asyncio.wait_for(h.app.status.drain(), timeout=5)
        [status_id] = h.status_messages_for(command)
        await until(
            lambda: h.client.texts.get(status_id, "").startswith("🎨"),
            waiting_for="the status to say the image is being generated",
            settle=app_work(h.app),
        )
        h.clock.advance(10)
        h.client.fail_next("edit_message", errors.MessageNotModifiedError(request=None))
        h.generator.gate.set()
        await h.finish()

        assert len(h.client.of("edit_message", ok=False)) == 1
        assert h.app.status.counters.flood_waits == 0
        assert len(h.client.of("send_file", ok=True)) == 1
        shown = [c.kwargs["message"] for c in h.client.of("send_message")]
        shown += [c.kwargs["text"] for c in h.client.of("edit_message")]
        assert shown
        assert not any(text.startswith("❌") for text in shown)
        assert len(h.status_messages_for(command)) == 1
        assert [o.ok for o in h.outcomes] == [True]
        assert h.client.texts == {}


async def test_a_refused_upload_tells_the_user() -> None:
    async with telegram_app(image_user_limits="1/1h") as h:
        h.client.fail_next("send_file", errors.ChatWriteForbiddenError(request=None))
        command = await h.say("/image=flux=a fox")
        await h.finish()

        assert h.client.of("send_file", ok=True) == []
        # The status message now says what happened (edited, or sent anew).
        [shown] = h.client.texts.values()
        assert UNSENDABLE.fullmatch(shown)
        [status_id] = h.client.texts
        assert status_id in h.status_messages_for(command)
        [outcome] = h.outcomes
        assert (outcome.ok, outcome.error_kind) == (False, "delivery_failed")
        assert f"❌ {outcome.error}" == shown
        # Not the user's fault: the allowance is given back.
        assert h.app.limiter.check(str(OWNER_ID)) is None


async def test_a_short_flood_wait_on_the_upload_is_waited_out() -> None:
    async with telegram_app() as h:
        h.client.fail_next("send_file", errors.FloodWaitError(request=None, capture=5))
        command = await h.say("/image=flux=a fox")
        await h.finish()

        refused, sent = h.client.of("send_file")
        assert isinstance(refused.raised, errors.FloodWaitError)
        assert sent.ok
        assert sent.at_s >= refused.at_s + 5
        assert sent.kwargs["reply_to"] == command
        assert sent.file_bytes == refused.file_bytes
        [outcome] = h.outcomes
        assert outcome.ok
        assert outcome.image_message_id == sent.message_id
        assert h.client.texts == {}


async def test_cancel_as_a_reply_to_a_status_message_cancels_that_job() -> None:
    async with telegram_app() as h:
        h.generator.gate = asyncio.Event()
        first = await h.say("/image=flux=first fox")
        second = await h.say("/image=flux=second fox")
        await asyncio.wait_for(h.app.status.drain(), timeout=5)
        assert h.generator.running == 1  # the first is generating, the second waits
        [second_status] = h.status_messages_for(second)
        assert h.client.texts[second_status].startswith("⏳ Queued for Flux")

        cancel = await h.say("/image cancel", reply_to=second_status)
        [reply] = h.client.replies_to(cancel)
        assert reply.kwargs["message"].startswith("🚫 Cancelled job ")
        h.generator.gate.set()
        await h.finish()

        [upload] = h.client.of("send_file", ok=True)
        assert upload.kwargs["reply_to"] == first
        assert len(h.generator.calls) == 1
        assert second_status not in h.client.texts
        assert sorted((o.reply_to, o.ok) for o in h.outcomes) == [(first, True), (second, False)]
        cancelled = next(o for o in h.outcomes if not o.ok)
        assert cancelled.error_kind == "cancelled"
        assert cancelled.job_id is not None
        assert cancelled.job_id in reply.kwargs["message"]


# -- pacing and error translation ---------------------------------------------------


def test_groups_get_the_longer_status_interval() -> None:
    settings = load_settings(env_file=None, status_edit_interval_s=2.5)
    interval_s = edit_interval_for(settings)
    assert interval_s(str(FRIEND)) == 2.5
    assert interval_s("-555") == 6.0
    assert interval_s("-1001234567890") == 6.0
    custom = edit_interval_for(load_settings(env_file=None, status_edit_interval_group_s=9))
    assert custom("-555") == 9.0
    assert custom("42") == 3.0


@pytest.mark.parametrize(
    ("raised", "expected", "retry_after_s"),
    [
        (errors.FloodWaitError(request=None, capture=17), FloodWait, 17.0),
        (errors.SlowModeWaitError(request=None, capture=9), FloodWait, 9.0),
        (errors.FloodPremiumWaitError(request=None, capture=4), FloodWait, 4.0),
        (errors.MessageNotModifiedError(request=None), MessageNotModified, None),
        (errors.MessageIdInvalidError(request=None), ChatError, None),
        (errors.ChatWriteForbiddenError(request=None), ChatError, None),
        (ConnectionError(), ChatError, None),
        (TimeoutError(), ChatError, None),
    ],
    ids=[
        "flood-wait",
        "slow-mode",
        "premium-flood",
        "not-modified",
        "message-id-invalid",
        "write-forbidden",
        "connection",
        "timeout",
    ],
)
def test_telethon_errors_become_the_cores(
    raised: BaseException, expected: type[ChatError], retry_after_s: float | None
) -> None:
    with pytest.raises(ChatError) as info, telegram_errors():
        raise raised
    assert type(info.value) is expected
    assert info.value.__cause__ is raised
    if retry_after_s is not None:
        assert isinstance(info.value, FloodWait)
        assert info.value.retry_after_s == retry_after_s


def test_errors_that_are_not_telegrams_pass_through() -> None:
    with pytest.raises(KeyError), telegram_errors():
        raise KeyError("a bug of ours")


async def test_the_chat_port_translates_what_the_client_raises() -> None:
    client = RecordingTelegramClient()
    chat = TelegramChat(client)
    status = await chat.send_text("42", "⏳ Queued", reply_to=7)
    with pytest.raises(MessageNotModified):
        await chat.edit_text("42", status, "⏳ Queued")  # Telegram refuses a same-text edit
    client.fail_next("edit_message", ConnectionError())
    with pytest.raises(ChatError):
        await chat.edit_text("42", status, "🎨 Generating")
    client.fail_next("delete_messages", errors.MessageIdInvalidError(request=None))
    with pytest.raises(ChatError):
        await chat.delete_message("42", status)
    client.fail_next("send_message", errors.FloodWaitError(request=None, capture=12))
    with pytest.raises(FloodWait) as info:
        await chat.send_text("42", "hi", reply_to=None)
    assert info.value.retry_after_s == 12
    await chat.delete_message("42", status)
    assert client.texts == {}


# -- the client and its session ------------------------------------------------------


@pytest.fixture
def no_connections(monkeypatch: pytest.MonkeyPatch) -> None:
    """Belt and braces: a client built here must never try to reach Telegram."""

    async def refuse(self: Any) -> None:
        raise AssertionError("a test tried to connect to Telegram")

    monkeypatch.setattr(TelegramClient, "connect", refuse)


@pytest.mark.parametrize(
    ("given", "missing"),
    [
        ({}, ["TELEGRAM_API_ID", "TELEGRAM_API_HASH"]),
        ({"telegram_api_id": 1}, ["TELEGRAM_API_HASH"]),
        ({"telegram_api_hash": "x"}, ["TELEGRAM_API_ID"]),
    ],
)
def test_build_client_names_the_missing_credentials(
    tmp_path: Path, given: dict[str, Any], missing: list[str]
) -> None:
    settings = load_settings(env_file=None, sakaibot_data_dir=tmp_path, **given)
    with pytest.raises(ConfigError) as info:
        build_client(settings)
    message = str(info.value)
    for name in missing:
        assert name in message
    assert len(info.value.problems) == len(missing)


@pytest.mark.usefixtures("no_connections")
async def test_build_client_uses_the_session_file_and_never_sleeps_through_floods(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "data"
    settings = load_settings(
        env_file=None, telegram_api_id=1, telegram_api_hash="x", sakaibot_data_dir=data_dir
    )
    client = build_client(settings)
    try:
        assert client.flood_sleep_threshold == 0
        assert isinstance(client.session, SQLiteSession)
        assert (data_dir / "sakaibot.session").is_file()
    finally:
        await client.disconnect()


def valid_string_session() -> str:
    session = StringSession()
    session.set_dc(2, "149.154.167.51", 443)
    session.auth_key = AuthKey(bytes(range(256)))
    return str(session.save())


@pytest.mark.usefixtures("no_connections")
async def test_build_client_prefers_the_string_session(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    text = valid_string_session()
    settings = load_settings(
        env_file=None,
        telegram_api_id=1,
        telegram_api_hash="x",
        telegram_session=text,
        sakaibot_data_dir=data_dir,
    )
    client = build_client(settings)
    try:
        assert client.flood_sleep_threshold == 0
        assert isinstance(client.session, StringSession)
        assert client.session.dc_id == 2
        assert export_string_session(client) == text
        assert not data_dir.exists()  # no session file written
    finally:
        await client.disconnect()


@pytest.mark.usefixtures("no_connections")
async def test_an_empty_string_session_means_the_session_file(tmp_path: Path) -> None:
    assert StringSession().save() == ""
    settings = load_settings(
        env_file=None,
        telegram_api_id=1,
        telegram_api_hash="x",
        telegram_session=StringSession().save(),
        sakaibot_data_dir=tmp_path,
    )
    client = build_client(settings)
    try:
        assert isinstance(client.session, SQLiteSession)
    finally:
        await client.disconnect()


def test_one_session_file_cannot_be_used_twice(tmp_path: Path) -> None:
    settings = load_settings(env_file=None, sakaibot_data_dir=tmp_path / "data")
    with (
        session_lock(settings),
        pytest.raises(ConfigError, match="already running"),
        session_lock(settings),
    ):
        pass
    # Released on exit: the next run may take it.
    with session_lock(settings):
        pass


def test_a_string_session_takes_no_file_lock(tmp_path: Path) -> None:
    settings = load_settings(
        env_file=None, telegram_session=valid_string_session(), sakaibot_data_dir=tmp_path / "d"
    )
    with session_lock(settings), session_lock(settings):
        pass
    assert not (tmp_path / "d").exists()


# -- reusing uploads and finding deliveries after a restart --------------------------


def test_upload_refs_round_trip_and_respect_the_kind() -> None:
    photo = types.Photo(
        id=11, access_hash=22, file_reference=b"\x01\x02", date=None, sizes=[], dc_id=2
    )
    message = types.Message(id=1, peer_id=types.PeerUser(5), message="")
    message.media = types.MessageMediaPhoto(photo=photo)
    ref = upload_ref_of(message)
    assert ref == "photo:11:22:0102"
    restored = input_file_of(ref, as_document=False)
    assert restored == types.InputPhoto(id=11, access_hash=22, file_reference=b"\x01\x02")
    assert input_file_of(ref, as_document=True) is None  # a photo is not a file
    assert input_file_of("garbage", as_document=False) is None
    assert input_file_of(None, as_document=False) is None


async def test_a_cache_hit_reuses_the_upload_and_falls_back_to_bytes() -> None:
    async with telegram_app() as h:
        await h.say("/image=flux=a red fox")
        await h.finish_jobs()
        await h.say("/image=flux=a red fox")
        await h.finish_jobs()
        h.client.fail_next("send_file", errors.FileReferenceExpiredError(request=None))
        await h.say("/image=flux=a red fox")
        await h.finish()
        first, reused, expired, fallback = h.client.of("send_file")
        assert first.kwargs["reused"] is None
        assert first.file_bytes
        assert isinstance(reused.kwargs["reused"], types.InputPhoto)
        assert reused.file_bytes is None  # no bytes uploaded again
        assert isinstance(expired.kwargs["reused"], types.InputPhoto)
        assert expired.ok is False
        assert fallback.file_bytes == first.file_bytes
        assert [o.ok for o in h.outcomes] == [True, True, True]
        assert len(h.generator.calls) == 1


async def test_find_delivered_looks_for_the_job_tag_after_the_command() -> None:
    client = RecordingTelegramClient()
    chat = TelegramChat(client)
    caption = Caption((CaptionPart("🎨 Flux · #ab12cd"),))
    image = OutgoingImage(tiny_image(), caption, "x.jpg", as_file=False)
    command_id = 100  # the fake client numbers its own messages from 101
    sent = await chat.send_image(str(FRIEND), image, reply_to=command_id)
    assert await chat.find_delivered(str(FRIEND), reply_to=command_id, job_id="ab12cd") == sent
    assert await chat.find_delivered(str(FRIEND), reply_to=command_id, job_id="ffffff") is None
    assert await chat.find_delivered(str(FRIEND), reply_to=sent, job_id="ab12cd") is None

"""Reaching a chat the client has not met: stored addresses, one lookup, recovery.

A real ``telethon.TelegramClient`` on an empty ``MemorySession`` is never
connected: its request call is replaced by :class:`FakeTelegram`, which
answers with real TL objects as Telegram would. So Telethon's own
``get_input_entity`` runs with an empty entity cache and raises its real
``ValueError`` for a bare id, exactly as it did after a restart on a real
server, while an input peer built from a stored address goes straight out.
"""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from telethon import TelegramClient, errors, utils
from telethon.sessions import MemorySession
from telethon.tl import functions, types

from sakaibot.app import build_app
from sakaibot.captions import Caption, CaptionPart
from sakaibot.chat.port import IncomingMessage, OutgoingImage
from sakaibot.chat.telegram import TelegramChat, chat_address_of, input_peer_of
from sakaibot.errors import ChatError
from sakaibot.pipeline import JobOutcome
from sakaibot.settings import load_settings
from sakaibot.store import StoredJobState
from sakaibot.store.sqlite import SqliteStore
from tests.support.fakes import FakeClock, FakeEnhancer, FakeGenerator, tiny_image

OWNER_ID = 1_000_001
FRIEND = types.User(id=2_000_002, access_hash=-4_242_424_242, first_name="friend")
GROUP = types.Chat(
    id=555, title="a group", photo=types.ChatPhotoEmpty(), participants_count=3,
    date=None, version=1,
)  # fmt: skip
SUPERGROUP = types.Channel(
    id=1_234_567_890, title="a supergroup", photo=types.ChatPhotoEmpty(), date=None,
    access_hash=987_654_321, megagroup=True,
)  # fmt: skip
_DATE = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)

#: (entity, its marked chat id, the address a message from it would carry)
CHATS = {
    "private chat": (FRIEND, str(FRIEND.id), f"user:{FRIEND.id}:{FRIEND.access_hash}"),
    "basic group": (GROUP, "-555", "chat:555"),
    "supergroup": (SUPERGROUP, "-1001234567890", "channel:1234567890:987654321"),
}


@dataclass
class FakeTelegram:
    """Answers a client's requests with real TL results, as a server would.

    It knows the account's ``dialogs``; like Telegram for a user account, it
    cannot find a user or channel from an id with no access hash.
    """

    dialogs: list[Any] = field(default_factory=list)
    requests: list[Any] = field(default_factory=list)
    #: Messages sent, edited or kept in the chats, by id.
    messages: dict[int, types.Message] = field(default_factory=dict)
    _ids: Any = field(default_factory=lambda: itertools.count(101))

    async def call(
        self, sender: Any, request: Any, ordered: bool = False, flood_sleep_threshold: Any = None
    ) -> Any:
        if isinstance(request, list):  # Telethon sends some requests in batches
            return [await self.call(sender, one) for one in request]
        self.requests.append(request)
        if isinstance(
            request,
            functions.messages.DeleteMessagesRequest | functions.channels.DeleteMessagesRequest,
        ):
            for message_id in request.id:
                self.messages.pop(message_id, None)
            return types.messages.AffectedMessages(pts=1, pts_count=1)
        if isinstance(request, functions.users.GetUsersRequest):
            return []  # a stranger's id with no access hash: nothing
        if isinstance(request, functions.channels.GetChannelsRequest):
            raise errors.ChannelInvalidError(request=request)
        if isinstance(request, functions.messages.GetDialogsRequest):
            return self._dialogs()
        if isinstance(request, functions.upload.SaveFilePartRequest):
            return True
        if isinstance(request, functions.messages.SendMessageRequest):
            sent = self._new(request.peer, request.message, request.reply_to)
            return types.UpdateShortSentMessage(
                id=sent.id, pts=1, pts_count=1, date=_DATE, out=True
            )
        if isinstance(request, functions.messages.SendMediaRequest):
            sent = self._new(request.peer, request.message, request.reply_to)
            sent.media = types.MessageMediaPhoto(
                photo=types.Photo(
                    id=9, access_hash=9, file_reference=b"r", date=_DATE, sizes=[], dc_id=2
                )
            )
            return self._updates(sent, request.random_id)
        if isinstance(request, functions.messages.EditMessageRequest):
            edited = self.messages[request.id]
            edited.message = request.message
            return self._updates(edited, None)
        if isinstance(
            request, functions.messages.GetMessagesRequest | functions.channels.GetMessagesRequest
        ):
            channel = getattr(request, "channel", None)
            found = []
            for wanted in request.id:
                message = self.messages.get(getattr(wanted, "id", wanted))
                in_channel = message is not None and isinstance(message.peer_id, types.PeerChannel)
                if message is None or (channel is not None) != in_channel:
                    # Telethon patches MessageEmpty onto its own Message, which wants a peer.
                    found.append(types.MessageEmpty(id=getattr(wanted, "id", wanted), peer_id=None))
                else:
                    found.append(message)
            return types.messages.Messages(messages=found, topics=[], chats=[], users=[])
        if isinstance(request, functions.messages.SearchRequest):
            found = [
                m
                for m in reversed(self.messages.values())
                if utils.get_peer_id(m.peer_id) == utils.get_peer_id(request.peer)
                and request.q in m.message
            ]
            return types.messages.Messages(messages=found, topics=[], chats=[], users=[])
        raise AssertionError(f"unexpected request {type(request).__name__}")

    def sent_to(self, chat_id: str) -> list[types.Message]:
        return [m for m in self.messages.values() if str(utils.get_peer_id(m.peer_id)) == chat_id]

    def _new(self, peer: Any, text: str, reply_to: Any) -> types.Message:
        message = types.Message(
            id=next(self._ids),
            peer_id=utils.get_peer(peer),
            date=_DATE,
            message=text,
            out=True,
            from_id=types.PeerUser(OWNER_ID),
            reply_to=None
            if reply_to is None
            else types.MessageReplyHeader(reply_to_msg_id=reply_to.reply_to_msg_id),
        )
        self.messages[message.id] = message
        return message

    def _updates(self, message: types.Message, random_id: int | None) -> types.Updates:
        channel = isinstance(message.peer_id, types.PeerChannel)
        new = (types.UpdateNewChannelMessage if channel else types.UpdateNewMessage)(
            message=message, pts=1, pts_count=1
        )
        updates: list[Any] = [new]
        if random_id is not None:
            updates.insert(0, types.UpdateMessageID(id=message.id, random_id=random_id))
        return types.Updates(updates=updates, users=[], chats=[], date=_DATE, seq=0)

    def _dialogs(self) -> types.messages.Dialogs:
        dialogs, top = [], []
        for n, entity in enumerate(self.dialogs, start=1):
            peer = utils.get_peer(entity)
            dialogs.append(
                types.Dialog(
                    peer=peer, top_message=n, read_inbox_max_id=0, read_outbox_max_id=0,
                    unread_count=0, unread_mentions_count=0, unread_reactions_count=0,
                    unread_poll_votes_count=0,
                    notify_settings=types.PeerNotifySettings(),
                )
            )  # fmt: skip
            top.append(types.Message(id=n, peer_id=peer, date=_DATE, message=""))
        users = [e for e in self.dialogs if isinstance(e, types.User)]
        chats = [e for e in self.dialogs if not isinstance(e, types.User)]
        return types.messages.Dialogs(dialogs=dialogs, messages=top, chats=chats, users=users)


def fresh_client(telegram: FakeTelegram) -> TelegramClient:
    """A client as after a restart: a session that has met no chat yet, never connected."""
    client = TelegramClient(MemorySession(), 1, "0" * 32, flood_sleep_threshold=0)
    client._call = telegram.call  # type: ignore[method-assign]
    return client


def outgoing(job_id: str) -> OutgoingImage:
    caption = Caption((CaptionPart(f"🎨 Flux · #{job_id}"),))
    return OutgoingImage(tiny_image(), caption, f"sakaibot-flux-{job_id}.jpg", as_file=False)


# -- addresses --------------------------------------------------------------------


@pytest.mark.parametrize("kind", CHATS)
def test_an_address_round_trips_to_the_same_input_peer(kind: str) -> None:
    entity, chat_id, address = CHATS[kind]
    peer = utils.get_input_peer(entity)
    assert chat_address_of(peer) == address
    assert input_peer_of(address) == peer
    assert str(utils.get_peer_id(input_peer_of(address))) == chat_id


@pytest.mark.parametrize("damaged", ["", "user:1", "user:x:2", "chat:1:2", "planet:1", "self:1"])
def test_a_damaged_address_teaches_nothing(damaged: str) -> None:
    assert input_peer_of(damaged) is None
    chat = TelegramChat(fresh_client(FakeTelegram()))
    chat.remember_chat("1", damaged)
    assert chat._peers == {}


def test_an_address_of_another_chat_is_ignored() -> None:
    chat = TelegramChat(fresh_client(FakeTelegram()))
    chat.remember_chat("-555", CHATS["supergroup"][2])
    assert chat._peers == {}


# -- a client with an empty entity cache --------------------------------------------


@pytest.mark.parametrize("kind", ["private chat", "supergroup"])
async def test_a_bare_id_is_what_failed_on_a_real_server(kind: str) -> None:
    """The defect as seen: Telethon cannot address a stranger's chat by its id alone."""
    _, chat_id, _ = CHATS[kind]
    client = fresh_client(FakeTelegram())
    with pytest.raises(ValueError, match="Could not find the input entity"):
        await client.send_message(int(chat_id), "hello")


@pytest.mark.parametrize("kind", CHATS)
async def test_a_stored_address_reaches_the_chat_with_no_lookup(kind: str) -> None:
    entity, chat_id, address = CHATS[kind]
    telegram = FakeTelegram()  # no dialogs: a lookup would fail
    chat = TelegramChat(fresh_client(telegram))
    chat.remember_chat(chat_id, address)

    status_id = await chat.send_text(chat_id, "⏳ Queued…", reply_to=40)
    await chat.edit_text(chat_id, status_id, "📤 Sending…")
    image_id = await chat.send_image(chat_id, outgoing("ab12cd"), reply_to=40)

    [status, image] = telegram.sent_to(chat_id)
    assert (status.id, status.message, status.reply_to.reply_to_msg_id) == (
        status_id,
        "📤 Sending…",
        40,
    )
    assert (image.id, image.reply_to.reply_to_msg_id) == (image_id, 40)
    assert "#ab12cd" in image.message
    addressed = [r.peer for r in telegram.requests if hasattr(r, "peer")]
    assert addressed
    assert all(peer == utils.get_input_peer(entity) for peer in addressed)
    assert not any(
        isinstance(r, functions.users.GetUsersRequest | functions.messages.GetDialogsRequest)
        for r in telegram.requests
    )


@pytest.mark.parametrize("kind", ["private chat", "supergroup"])
async def test_an_unknown_chat_is_looked_up_once_and_the_send_made_again(kind: str) -> None:
    entity, chat_id, _ = CHATS[kind]
    telegram = FakeTelegram(dialogs=[GROUP, entity])
    chat = TelegramChat(fresh_client(telegram))  # no address: jobs stored before this version

    first = await chat.send_text(chat_id, "one", reply_to=None)
    second = await chat.send_text(chat_id, "two", reply_to=None)

    assert [m.id for m in telegram.sent_to(chat_id)] == [first, second]
    lookups = [r for r in telegram.requests if isinstance(r, functions.messages.GetDialogsRequest)]
    assert len(lookups) == 1  # remembered after the first time


async def test_a_chat_nowhere_to_be_found_is_a_chat_error_after_one_lookup() -> None:
    telegram = FakeTelegram(dialogs=[GROUP])
    chat = TelegramChat(fresh_client(telegram))
    with pytest.raises(ChatError, match="could not address the chat"):
        await chat.send_image(str(FRIEND.id), outgoing("ab12cd"), reply_to=1)
    lookups = [r for r in telegram.requests if isinstance(r, functions.messages.GetDialogsRequest)]
    assert len(lookups) == 1
    assert telegram.messages == {}


async def test_a_bot_account_does_not_list_dialogs() -> None:
    telegram = FakeTelegram(dialogs=[FRIEND])
    chat = TelegramChat(fresh_client(telegram), bot_account=True)
    with pytest.raises(ChatError):
        await chat.send_text(str(FRIEND.id), "hello", reply_to=None)
    assert not any(isinstance(r, functions.messages.GetDialogsRequest) for r in telegram.requests)


@pytest.mark.parametrize("kind", CHATS)
async def test_find_delivered_searches_the_tag_however_far_after_the_command(kind: str) -> None:
    _, chat_id, address = CHATS[kind]
    telegram = FakeTelegram()
    chat = TelegramChat(fresh_client(telegram))
    chat.remember_chat(chat_id, address)
    telegram._ids = itertools.count(10_000)  # far past any fixed window after the command
    sent = await chat.send_image(chat_id, outgoing("ab12cd"), reply_to=7)

    assert await chat.find_delivered(chat_id, reply_to=7, job_id="ab12cd") == sent
    assert await chat.find_delivered(chat_id, reply_to=7, job_id="ffffff") is None
    assert await chat.find_delivered(chat_id, reply_to=8, job_id="ab12cd") is None
    [search, *_] = [r for r in telegram.requests if isinstance(r, functions.messages.SearchRequest)]
    assert search.q == "#ab12cd"
    assert search.peer == input_peer_of(address)


@pytest.mark.parametrize("kind", ["private chat", "supergroup"])
async def test_a_bot_reads_ids_after_the_command_until_past_the_newest(kind: str) -> None:
    """Bots may not search: pages of ids, however many, until one holds no message."""
    entity, chat_id, address = CHATS[kind]
    telegram = FakeTelegram()
    chat = TelegramChat(fresh_client(telegram), bot_account=True)
    chat.remember_chat(chat_id, address)
    # 360 messages elsewhere (a private chat shares the bot's numbering with every
    # other one) or from other members (a supergroup numbers its own).
    elsewhere = types.PeerUser(777) if kind == "private chat" else utils.get_peer(entity)
    for message_id in range(41, 401):
        telegram.messages[message_id] = types.Message(
            id=message_id, peer_id=elsewhere, date=_DATE, message="chatter", out=False
        )
    telegram._ids = itertools.count(401)
    sent = await chat.send_image(chat_id, outgoing("ab12cd"), reply_to=40)

    assert await chat.find_delivered(chat_id, reply_to=40, job_id="ab12cd") == sent == 401
    telegram.requests.clear()
    assert await chat.find_delivered(chat_id, reply_to=40, job_id="ffffff") is None
    pages = [r for r in telegram.requests if hasattr(r, "id") and isinstance(r.id, list)]
    assert len(pages) == 5  # 41-140, …, 401-500 (holds ours), 501-600 (empty: the end)
    assert not any(isinstance(r, functions.messages.SearchRequest) for r in telegram.requests)


# -- a restart with a fresh client ----------------------------------------------------

SETTINGS = {
    "flux_worker_url": "http://127.0.0.1:9/flux",
    "sdxl_worker_url": "http://127.0.0.1:9/sdxl",
    "sdxl_api_key": "k",
    "status_edit_interval_s": 0.0,
}


def telegram_app(data_dir: Path, chat: Any, generator: FakeGenerator, clock: FakeClock) -> Any:
    outcomes: list[JobOutcome] = []
    app = build_app(
        load_settings(env_file=None, sakaibot_data_dir=data_dir, **SETTINGS),
        chat,
        on_outcome=outcomes.append,
        generator=generator,
        enhancer=FakeEnhancer(),
        clock=clock,
        wall_clock=clock,
        sleep=clock.sleep,
    )
    return app, outcomes


@pytest.mark.parametrize("kind", CHATS)
async def test_a_recovered_job_reaches_its_chat_through_a_fresh_client(
    kind: str, tmp_path: Path
) -> None:
    entity, chat_id, address = CHATS[kind]
    clock = FakeClock()
    before = FakeTelegram()
    first_chat = TelegramChat(fresh_client(before))
    first, _ = telegram_app(tmp_path, first_chat, FakeGenerator(gate=asyncio.Event()), clock)
    await first.start()
    command = IncomingMessage(chat_id, 40, "ann", "/image=flux=a red fox", chat_address=address)
    await first.bot.handle(command)
    await asyncio.wait_for(first.status.drain(), timeout=5)
    await first.aclose()  # killed while the job waited for its worker

    # A new process: its client has met nobody, and the chat is in no dialog list.
    before.requests.clear()
    second_chat = TelegramChat(fresh_client(before))
    second, outcomes = telegram_app(tmp_path, second_chat, FakeGenerator(), clock)
    await second.start()
    await asyncio.wait_for(second.drain(), timeout=10)
    await asyncio.wait_for(second.status.drain(), timeout=5)
    await second.aclose()

    assert [o.ok for o in outcomes] == [True]
    [image] = [m for m in before.sent_to(chat_id) if m.media is not None]
    assert image.reply_to.reply_to_msg_id == 40
    assert before.sent_to(chat_id) == [image]  # the status message taken over, then removed
    peers = [r.peer for r in before.requests if hasattr(r, "peer")]
    assert peers
    assert all(peer == utils.get_input_peer(entity) for peer in peers)


async def test_an_image_that_cannot_reach_the_chat_names_the_retry_and_history_follows_it(
    tmp_path: Path,
) -> None:
    _, chat_id, address = CHATS["private chat"]
    clock = FakeClock()
    telegram = FakeTelegram()
    chat = TelegramChat(fresh_client(telegram))
    app, outcomes = telegram_app(tmp_path, chat, FakeGenerator(), clock)
    await app.start()
    refusals = iter([errors.ChatWriteForbiddenError(request=None)] * 2)
    real_call = telegram.call

    async def refuse_media(sender: Any, request: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(request, functions.messages.SendMediaRequest):
            refusal = next(refusals, None)
            if refusal is not None:
                telegram.requests.append(request)
                raise refusal
        return await real_call(sender, request, *args, **kwargs)

    chat._client._call = refuse_media
    await app.bot.handle(
        IncomingMessage(chat_id, 40, "ann", "/image=flux=a red fox", chat_address=address)
    )
    await asyncio.wait_for(app.drain(), timeout=10)
    [outcome] = outcomes
    assert outcome.ok is False
    job_id = outcome.job_id
    texts = [m.message for m in telegram.sent_to(chat_id) if m.media is None]
    assert any(f"/image retry {job_id}" in text for text in texts), texts

    await app.bot.handle(
        IncomingMessage(chat_id, 41, "ann", "/image history", chat_address=address)
    )
    history = telegram.sent_to(chat_id)[-1].message
    assert f"{job_id} flux" in history
    assert f"made but not sent (try /image retry {job_id})" in history
    assert "delivery_failed" not in history

    # The first retry is refused too: it stays kept and says so.
    await app.bot.handle(IncomingMessage(chat_id, 42, "ann", f"/image retry {job_id}"))
    assert f"try /image retry {job_id} again later" in telegram.sent_to(chat_id)[-1].message
    await app.bot.handle(IncomingMessage(chat_id, 43, "ann", f"/image retry {job_id}"))
    images = [m for m in telegram.sent_to(chat_id) if m.media is not None]
    assert [m.reply_to.reply_to_msg_id for m in images] == [40]

    await app.bot.handle(IncomingMessage(chat_id, 44, "ann", "/image history"))
    history = telegram.sent_to(chat_id)[-1].message
    assert f"• {job_id} flux" in history
    assert "delivered — a red fox" in history
    await app.aclose()

    store = SqliteStore(tmp_path / "sakaibot.db", exclusive=False)
    await store.open()
    try:
        record = await store.get_job(job_id or "")
    finally:
        await store.close()
    assert record is not None
    assert (record.state, record.delivered_message_id) == (StoredJobState.DONE, images[0].id)
    assert record.chat_address == address

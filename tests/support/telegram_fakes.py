"""Telethon stand-ins: a recording client and real Telethon messages and events.

:class:`RecordingTelegramClient` takes the place of ``telethon.TelegramClient``
for the four calls the adapter makes. It keeps what Telegram would hold (the
text of each message, the files sent) and behaves like Telegram where that
matters to the bot: editing a message to its current text raises
``MessageNotModifiedError`` and editing a message that does not exist raises
``MessageIdInvalidError``. Any call can be scripted to raise a real Telethon
error (or ``ConnectionError``) next.

:func:`make_message` builds a real ``telethon.tl.types.Message`` (Telethon's
custom message class) and finishes it the way Telethon does for an update, so
``.sender``, ``.sender_id``, ``.chat_id``, ``.out``, ``.fwd_from`` and ``.post``
are computed by Telethon itself, not by the test. :func:`make_press` does the
same for a pressed inline button (a ``CallbackQuery`` event).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from telethon import errors, events, utils
from telethon._updates import EntityCache
from telethon.tl import types

#: The userbot's own account in the tests.
OWNER_ID = 1_000_001

_DATE = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
_message_ids = itertools.count(5_000)
_query_ids = itertools.count(9_000)
#: ``buttons`` left out of a call (a user account never passes it).
_NOT_GIVEN: Any = object()


@dataclass
class ClientCall:
    """One call the adapter made, as Telegram would have received it."""

    name: str  # send_message | edit_message | delete_messages | send_file
    entity: Any
    kwargs: dict[str, Any]
    #: The id of the message the call created (sends only).
    message_id: int | None = None
    #: The exception the call raised instead, if it was scripted to fail.
    raised: BaseException | None = None
    at_s: float = 0.0
    #: ``send_file`` only: what was read from the file object, and its name.
    file_bytes: bytes | None = None
    file_name: str | None = None

    @property
    def ok(self) -> bool:
        return self.raised is None

    @property
    def chat_id(self) -> int:
        """The marked id of the chat addressed, by id or by input peer."""
        return int(utils.get_peer_id(_peer_of(self.entity)))


@dataclass
class SentFile:
    message_id: int
    entity: Any
    data: bytes
    name: str | None
    caption: str | None


class RecordingTelegramClient:
    """Records every call; returns real Telethon messages with increasing ids."""

    def __init__(self, *, self_id: int = OWNER_ID, clock: Callable[[], float] | None = None):
        # What Message._finish_init reads from a client.
        self._self_id = self_id
        self._mb_entity_cache = EntityCache()
        self._clock = clock
        self._ids = itertools.count(101)
        self.calls: list[ClientCall] = []
        #: The text each message shows now (status messages, replies); gone when deleted.
        self.texts: dict[int, str] = {}
        self.files: list[SentFile] = []
        self.sent: dict[int, types.Message] = {}
        self._failures: dict[str, list[BaseException]] = {}

    # -- scripting ------------------------------------------------------------

    def fail_next(self, method: str, *exceptions: BaseException) -> None:
        """The next calls of ``method`` raise ``exceptions``, in order."""
        if method not in {"send_message", "edit_message", "delete_messages", "send_file"}:
            raise ValueError(f"unknown client method {method!r}")
        self._failures.setdefault(method, []).extend(exceptions)

    def of(self, name: str, *, ok: bool | None = None) -> list[ClientCall]:
        """The calls of ``name`` (only the successful or failed ones when ``ok`` is given)."""
        return [c for c in self.calls if c.name == name and (ok is None or c.ok == ok)]

    def replies_to(self, message_id: int) -> list[ClientCall]:
        """Text messages and files sent as replies to ``message_id``."""
        return [
            c
            for c in self.calls
            if c.ok
            and c.name in {"send_message", "send_file"}
            and c.kwargs.get("reply_to") == message_id
        ]

    # -- what the adapter calls -------------------------------------------------

    async def send_message(
        self,
        entity: Any,
        message: str,
        *,
        reply_to: int | None = None,
        parse_mode: Any = (),
        link_preview: bool = True,
        buttons: Any = _NOT_GIVEN,
    ) -> types.Message:
        call = self._record(
            "send_message",
            entity,
            message=message,
            reply_to=reply_to,
            parse_mode=parse_mode,
            link_preview=link_preview,
        )
        _note_buttons(call, buttons)
        self._raise_if_scripted(call)
        return self._new_message(call, entity, message, reply_to)

    async def edit_message(
        self,
        entity: Any,
        message: int,
        text: str,
        *,
        parse_mode: Any = (),
        link_preview: bool = True,
        buttons: Any = _NOT_GIVEN,
    ) -> types.Message:
        call = self._record(
            "edit_message",
            entity,
            message=message,
            text=text,
            parse_mode=parse_mode,
            link_preview=link_preview,
        )
        _note_buttons(call, buttons)
        self._raise_if_scripted(call)
        if message not in self.texts:
            self._fail(call, errors.MessageIdInvalidError(request=None))
        if self.texts[message] == text:
            self._fail(call, errors.MessageNotModifiedError(request=None))
        self.texts[message] = text
        return self._message(message, entity, text)

    async def delete_messages(self, entity: Any, ids: list[int]) -> list[Any]:
        call = self._record("delete_messages", entity, ids=list(ids))
        self._raise_if_scripted(call)
        for message_id in ids:
            self.texts.pop(message_id, None)
        return []

    async def send_file(
        self,
        entity: Any,
        file: Any,
        *,
        caption: str | list[str] | None = None,
        parse_mode: Any = (),
        force_document: bool = False,
        reply_to: int | None = None,
        buttons: Any = _NOT_GIVEN,
    ) -> Any:
        """One file, or (a list of files and captions) one album: a list of messages."""
        album = isinstance(file, list)
        files = file if album else [file]
        reused = [isinstance(f, types.InputPhoto | types.InputDocument) for f in files]
        data = [None if r else f.read() for f, r in zip(files, reused, strict=True)]
        call = self._record(
            "send_file",
            entity,
            caption=caption,
            parse_mode=parse_mode,
            force_document=force_document,
            reply_to=reply_to,
        )
        call.file_bytes = data[0]
        call.file_name = getattr(files[0], "name", None)
        call.kwargs["reused"] = files[0] if reused[0] else None
        if album:
            call.kwargs["file_names"] = [getattr(f, "name", None) for f in files]
            call.kwargs["file_bytes"] = data
        _note_buttons(call, buttons)
        self._raise_if_scripted(call)
        captions = caption if isinstance(caption, list) else [caption]
        messages: list[types.Message] = []
        for index, (one, read) in enumerate(zip(files, data, strict=True)):
            text = captions[index] if index < len(captions) else None
            messages.append(
                self._sent_file(call, entity, getattr(one, "name", None), read, text, reply_to,
                                force_document)
            )  # fmt: skip
        if album:
            call.kwargs["message_ids"] = [m.id for m in messages]
            return messages
        return messages[0]

    def _sent_file(
        self,
        call: ClientCall,
        entity: Any,
        name: str | None,
        data: bytes | None,
        caption: str | None,
        reply_to: int | None,
        force_document: bool,
    ) -> types.Message:
        sent = self._new_message(call, entity, caption or "", reply_to, keep_text=False)
        # Like Telegram: the message carries the uploaded photo or document.
        file_id = 7000 + sent.id
        if force_document:
            sent.media = types.MessageMediaDocument(
                document=types.Document(
                    id=file_id, access_hash=file_id * 3, file_reference=b"ref", date=_DATE,
                    mime_type="image/png", size=len(data or b""), dc_id=2, attributes=[],
                )
            )  # fmt: skip
        else:
            sent.media = types.MessageMediaPhoto(
                photo=types.Photo(
                    id=file_id, access_hash=file_id * 3, file_reference=b"ref", date=_DATE,
                    sizes=[], dc_id=2,
                )
            )  # fmt: skip
        self.files.append(SentFile(sent.id, entity, data or b"", name, caption))
        self.sent[sent.id] = sent
        return sent

    async def get_messages(
        self,
        entity: Any,
        *,
        ids: list[int] | None = None,
        search: str | None = None,
        min_id: int = 0,
        limit: int | None = None,
    ) -> list[Any]:
        self._record("get_messages", entity, ids=ids, search=search, min_id=min_id, limit=limit)
        if ids is not None:
            return [self.sent.get(message_id) for message_id in ids]
        # Telegram's search: the newest first, containing the text, after min_id.
        found = [
            m
            for m in reversed(self.sent.values())
            if m.id > min_id and (search or "") in (m.raw_text or "")
        ]
        return found[:limit]

    async def __call__(self, request: Any) -> bool:
        """A raw request (``event.answer()`` sends ``SetBotCallbackAnswerRequest``)."""
        self._record(type(request).__name__, None, request=request)
        return True

    # -- helpers ----------------------------------------------------------------

    def _record(self, name: str, entity: Any, **kwargs: Any) -> ClientCall:
        at_s = self._clock() if self._clock is not None else 0.0
        call = ClientCall(name, entity, kwargs, at_s=at_s)
        self.calls.append(call)
        return call

    def _raise_if_scripted(self, call: ClientCall) -> None:
        queue = self._failures.get(call.name)
        if queue:
            self._fail(call, queue.pop(0))

    @staticmethod
    def _fail(call: ClientCall, exc: BaseException) -> None:
        call.raised = exc
        raise exc

    def _new_message(
        self,
        call: ClientCall,
        entity: Any,
        text: str,
        reply_to: int | None,
        *,
        keep_text: bool = True,
    ) -> types.Message:
        message_id = next(self._ids)
        call.message_id = message_id
        if keep_text:
            self.texts[message_id] = text
        return self._message(message_id, entity, text, reply_to)

    def _message(
        self, message_id: int, entity: Any, text: str, reply_to: int | None = None
    ) -> types.Message:
        message = types.Message(
            id=message_id,
            peer_id=_peer_of(entity),
            date=_DATE,
            message=text,
            out=True,
            from_id=types.PeerUser(self._self_id),
            reply_to=None
            if reply_to is None
            else types.MessageReplyHeader(reply_to_msg_id=reply_to),
        )
        message._finish_init(self, {}, None)
        return message


def _note_buttons(call: ClientCall, buttons: Any) -> None:
    """Record the inline keyboard when one was given (``None`` too: it removes one)."""
    if buttons is not _NOT_GIVEN:
        call.kwargs["buttons"] = buttons


def _peer_of(entity: Any) -> Any:
    """The chat a call addressed: a marked id or an input peer, as Telethon takes them."""
    if isinstance(entity, int):
        peer_id, peer_type = utils.resolve_id(entity)
        return peer_type(peer_id)
    return utils.get_peer(entity)


def make_message(
    client: Any,
    *,
    text: str,
    chat: types.PeerUser | types.PeerChat | types.PeerChannel,
    sender_id: int,
    out: bool = False,
    fwd: bool = False,
    post: bool = False,
    via_bot_id: int | None = None,
    sender_is_bot: bool = False,
    reply_to_msg_id: int | None = None,
    msg_id: int | None = None,
) -> types.Message:
    """A real Telethon message as an update would deliver it, finished on ``client``.

    The fields follow what Telegram sends: an incoming private message has no
    ``from_id`` (Telethon takes the sender from the chat), a channel post has
    none either, everything else names its sender.
    """
    private_incoming = isinstance(chat, types.PeerUser) and not out
    if private_incoming and chat.user_id != sender_id:
        raise ValueError("in a private chat an incoming message comes from the other person")
    from_id = None if (private_incoming or post) else types.PeerUser(sender_id)
    message = types.Message(
        id=next(_message_ids) if msg_id is None else msg_id,
        peer_id=chat,
        date=_DATE,
        message=text,
        out=out,
        post=post or None,
        from_id=from_id,
        fwd_from=types.MessageFwdHeader(date=_DATE) if fwd else None,
        via_bot_id=via_bot_id,
        reply_to=(
            None
            if reply_to_msg_id is None
            else types.MessageReplyHeader(reply_to_msg_id=reply_to_msg_id)
        ),
    )
    sender = types.User(
        id=sender_id,
        is_self=sender_id == client._self_id,
        bot=sender_is_bot,
        access_hash=sender_id * 7,
        first_name="Bot" if sender_is_bot else f"user{sender_id}",
    )
    entities: dict[int, Any] = {utils.get_peer_id(sender): sender}
    # Like an update, which names the chat too (with its access hash).
    chat_entity = _chat_entity(chat, self_id=client._self_id)
    entities.setdefault(utils.get_peer_id(chat_entity), chat_entity)
    message._finish_init(client, entities, None)
    return message


def _chat_entity(
    chat: types.PeerUser | types.PeerChat | types.PeerChannel, *, self_id: int
) -> types.User | types.Chat | types.Channel:
    """The entity an update carries for ``chat``; access hashes are made up but stable."""
    if isinstance(chat, types.PeerUser):
        user_id = chat.user_id
        return types.User(
            id=user_id, is_self=user_id == self_id, access_hash=user_id * 7, first_name="someone"
        )
    if isinstance(chat, types.PeerChat):
        return types.Chat(
            id=chat.chat_id, title="a group", photo=types.ChatPhotoEmpty(),
            participants_count=3, date=_DATE, version=1,
        )  # fmt: skip
    return types.Channel(
        id=chat.channel_id, title="a supergroup", photo=types.ChatPhotoEmpty(), date=_DATE,
        access_hash=chat.channel_id * 11, megagroup=True,
    )  # fmt: skip


def make_event(client: Any, **fields: Any) -> events.NewMessage.Event:
    """A ``NewMessage`` event carrying :func:`make_message`'s message."""
    return events.NewMessage.Event(make_message(client, **fields))


def make_press(
    client: Any,
    *,
    data: bytes,
    chat: types.PeerUser | types.PeerChat | types.PeerChannel,
    sender_id: int,
    msg_id: int,
) -> events.CallbackQuery.Event:
    """A real ``CallbackQuery`` event for a press on the button carrying ``data``,
    built and finished the way Telethon's update dispatch does."""
    update = types.UpdateBotCallbackQuery(
        query_id=next(_query_ids),
        user_id=sender_id,
        peer=chat,
        msg_id=msg_id,
        chat_instance=42,
        data=data,
    )
    event = events.CallbackQuery.build(update)
    sender = types.User(
        id=sender_id, is_self=False, access_hash=sender_id * 7, first_name=f"user{sender_id}"
    )
    chat_entity = _chat_entity(chat, self_id=client._self_id)
    event._entities = {
        utils.get_peer_id(sender): sender,
        utils.get_peer_id(chat_entity): chat_entity,
    }
    event._set_client(client)
    return event


@dataclass
class RecordingHandle:
    """A front end's ``handle`` that only records what it was given."""

    received: list[Any] = field(default_factory=list)

    async def __call__(self, message: Any) -> bool:
        self.received.append(message)
        return True

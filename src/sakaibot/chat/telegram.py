"""The Telegram front end over Telethon: the only module that imports ``telethon``.

It adds to the core only what Telegram has: who may use the bot, its error
types translated into the core's (:class:`~sakaibot.errors.FloodWait`,
:class:`~sakaibot.errors.MessageNotModified`, :class:`~sakaibot.errors.ChatError`),
photo-versus-document delivery within Telegram's limits, HTML captions, a
longer status interval in groups, inline buttons for the core's one-tap actions
(bot accounts only: user accounts cannot send them), login, and a clean run/stop.

``flood_sleep_threshold`` is 0 on purpose: Telethon would otherwise sleep
through waits of up to 60 s inside whichever coroutine made the call, which
would stall a status lane or an upload silently. Every flood wait reaches us
as an exception and the core decides: status lanes mute, deliveries wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import functools
import getpass
import io
import ipaddress
import logging
import signal
import struct
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal, TextIO, TypeVar

import rsa
from telethon import Button, TelegramClient, errors, events, utils
from telethon.client.telegrambaseclient import (
    DEFAULT_DC_ID,
    DEFAULT_IPV4_IP,
    DEFAULT_IPV6_IP,
    DEFAULT_PORT,
)
from telethon.crypto import rsa as telethon_rsa
from telethon.sessions import SQLiteSession, StringSession
from telethon.tl import types

from sakaibot.captions import Caption, cut_to_utf16, job_tag
from sakaibot.chat.port import (
    ACTION_KINDS,
    Action,
    ActionAnswer,
    ActionPress,
    IncomingMessage,
    OutgoingImage,
)
from sakaibot.errors import (
    ChatError,
    ConfigError,
    FloodWait,
    LoginFailed,
    MessageNotModified,
    NotYourButton,
    TelegramUnreachable,
    plural,
)
from sakaibot.generation import GeneratedImage
from sakaibot.i18n import Texts, english_for
from sakaibot.private_files import make_private_dir, narrow_file
from sakaibot.settings import (
    MAX_PUBLIC_KEY_FILE_BYTES,
    PUBLIC_KEY_HINT,
    Settings,
    TelegramServer,
    read_server_key_file,
)
from sakaibot.status import action_label

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: Telegram's limits for a photo; anything else goes as a document.
PHOTO_MAX_BYTES = 10 * 1024 * 1024
PHOTO_MAX_SIDES_PX = 10_000
PHOTO_MAX_ASPECT = 20.0
#: A media group (album) holds 2 to 10 items.
ALBUM_MAX_ITEMS = 10
TEXT_LIMIT_UTF16 = 4096
#: How many of our messages carrying a job's tag a user account looks through
#: after a crash (a count of search results, not of message ids: normally one).
_TAGGED_RESULTS_MAX = 50
#: How many message ids a bot account asks for at once (Telegram's maximum).
_IDS_PER_REQUEST = 100
#: Telegram's limits for a button's data and for the answer to a press.
CALLBACK_DATA_MAX_BYTES = 64
CALLBACK_ANSWER_MAX_CHARS = 200


def action_data(action: Action) -> bytes:
    """A button's data: ``again:<job id>``, within Telegram's 64 bytes."""
    data = f"{action.kind}:{action.job_id}".encode()
    if len(data) > CALLBACK_DATA_MAX_BYTES:
        raise ValueError(f"job id {action.job_id!r} is too long for a button")
    return data


def action_of(data: bytes | None) -> Action | None:
    """The action a pressed button stands for, or ``None`` when it is not one of ours."""
    if not data or len(data) > CALLBACK_DATA_MAX_BYTES:
        return None
    try:
        kind, _, job_id = data.decode("ascii").partition(":")
    except UnicodeDecodeError:
        return None
    # Job ids are what /image cancel takes: short, printable, no spaces.
    if not (job_id.isascii() and job_id.isalnum()):
        return None
    for known in ACTION_KINDS:
        if kind == known:
            return Action(known, job_id)
    return None


def buttons_for(actions: tuple[Action, ...]) -> list[list[Any]] | None:
    """One row of inline buttons for ``actions`` (``None``: no keyboard)."""
    row = []
    for action in actions:
        try:
            row.append(
                Button.inline(action.label or action_label(action.kind), data=action_data(action))
            )
        except ValueError:
            logger.warning("job %s: no %s button (id too long)", action.job_id, action.kind)
    return [row] if row else None


def fits_as_photo(image: GeneratedImage) -> bool:
    """Whether Telegram accepts ``image`` as a photo (size, width + height, aspect ratio)."""
    if image.size_bytes > PHOTO_MAX_BYTES:
        return False
    if image.width + image.height > PHOTO_MAX_SIDES_PX:
        return False
    short, long = sorted((max(image.width, 1), max(image.height, 1)))
    return long / short <= PHOTO_MAX_ASPECT


@contextlib.contextmanager
def telegram_errors() -> Iterator[None]:
    """Translate Telethon's errors into the core's, exactly once."""
    try:
        yield
    except errors.MessageNotModifiedError as exc:
        raise MessageNotModified("text unchanged") from exc
    except errors.FloodError as exc:  # FloodWaitError, SlowModeWaitError, ...
        raise FloodWait(float(getattr(exc, "seconds", 0) or 30)) from exc
    except errors.RPCError as exc:
        raise ChatError(f"telegram refused: {type(exc).__name__}") from exc
    except (ConnectionError, OSError, TimeoutError) as exc:
        raise ChatError(f"telegram unreachable: {type(exc).__name__}") from exc
    except ValueError as exc:  # e.g. Telethon cannot resolve a chat id it has not seen
        raise ChatError(f"telegram could not address the chat: {exc}") from exc


class TelegramChat:
    """The chat port on a Telethon client. Chat ids are Telethon's marked peer ids.

    Every call addresses its chat by an input peer when one is known: learned
    from the chat's messages and, after a restart, from the address stored with
    each job (:meth:`remember_chat`). A user account cannot reach a chat that
    is not a contact by its id alone, and a fresh client (a string session, or
    a session file after a crash) has not met any chat yet. When Telethon still
    cannot address a chat, it is looked up once (the account's dialogs) and the
    call is made again.
    """

    def __init__(self, client: Any, *, bot_account: bool = False) -> None:
        self._client = client
        #: Bots may not search or list dialogs; they look messages up by id.
        self._bot_account = bot_account
        #: Each chat's input peer, by chat id.
        self._peers: dict[str, Any] = {}
        #: One lookup at a time: recovered jobs of one chat all fail together.
        self._resolving = asyncio.Lock()

    def connected(self) -> bool:
        """Whether the client is connected to Telegram now (for ``/healthz``)."""
        return bool(self._client.is_connected())

    def remember_chat(self, chat_id: str, address: str | None) -> None:
        peer = input_peer_of(address)
        if peer is None:
            return
        if not isinstance(peer, types.InputPeerSelf) and str(utils.get_peer_id(peer)) != chat_id:
            logger.warning("chat %s: ignored an address of another chat", chat_id)
            return
        self._peers[chat_id] = peer

    async def _addressed(self, chat_id: str, call: Callable[[Any], Awaitable[T]]) -> T:
        """``call(peer)`` for the chat; on an entity error, resolve the chat and retry once."""
        with telegram_errors():
            known = self._peers.get(chat_id)
            try:
                return await call(known if known is not None else int(chat_id))
            except (ValueError, errors.PeerIdInvalidError) as exc:
                if not _is_entity_error(exc):
                    raise
                logger.info(
                    "chat %s: the client cannot address it (%s); looking it up", chat_id, exc
                )
            return await call(await self._resolve(chat_id, failed=known))

    async def _resolve(self, chat_id: str, *, failed: Any) -> Any:
        async with self._resolving:
            known = self._peers.get(chat_id)
            if known is not None and known != failed:
                return known  # another call looked it up meanwhile
            marked = int(chat_id)
            try:
                peer = await self._client.get_input_entity(marked)
            except (ValueError, errors.RPCError):
                if self._bot_account:
                    raise  # bots may not list dialogs: nothing else to try
                peer = await self._peer_from_dialogs(marked)
            self._peers[chat_id] = peer
            return peer

    async def _peer_from_dialogs(self, marked: int) -> Any:
        """The chat among the account's dialogs (which also teaches Telethon every peer)."""
        async for dialog in self._client.iter_dialogs():
            if dialog.id == marked:
                return dialog.input_entity
        raise ValueError(f"Could not find the input entity for {marked} among the dialogs")

    def _keyboard(self, actions: tuple[Action, ...]) -> dict[str, Any]:
        """The ``buttons`` argument for a bot account; nothing at all for a user account,
        which cannot send inline buttons (Telegram refuses them)."""
        if not self._bot_account:
            return {}
        return {"buttons": buttons_for(actions)}

    async def send_text(
        self,
        chat_id: str,
        text: str,
        *,
        reply_to: int | None,
        actions: tuple[Action, ...] = (),
    ) -> int:
        keyboard = self._keyboard(actions) if actions else {}
        # Plain text, no parse mode: user text can never be taken for markup.
        message = await self._addressed(
            chat_id,
            lambda peer: self._client.send_message(
                peer,
                cut_to_utf16(text, TEXT_LIMIT_UTF16),
                reply_to=reply_to,
                parse_mode=None,
                link_preview=False,
                **keyboard,
            ),
        )
        return int(message.id)

    async def edit_text(
        self, chat_id: str, message_id: int, text: str, *, actions: tuple[Action, ...] = ()
    ) -> None:
        # An edit without buttons removes a bot's keyboard: so it is always given.
        keyboard = self._keyboard(actions)
        await self._addressed(
            chat_id,
            lambda peer: self._client.edit_message(
                peer,
                message_id,
                cut_to_utf16(text, TEXT_LIMIT_UTF16),
                parse_mode=None,
                link_preview=False,
                **keyboard,
            ),
        )

    async def delete_message(self, chat_id: str, message_id: int) -> None:
        await self._addressed(
            chat_id, lambda peer: self._client.delete_messages(peer, [message_id])
        )

    async def send_image(self, chat_id: str, image: OutgoingImage, *, reply_to: int | None) -> int:
        as_document = image.as_file or not fits_as_photo(image.image)
        reused = input_file_of(image.upload_ref, as_document=as_document)
        if reused is not None:
            try:
                message = await self._send(chat_id, reused, image, as_document, reply_to)
                return int(message.id)
            except (FloodWait, MessageNotModified):
                raise
            except ChatError:
                # An old reference may have expired: the bytes always work.
                logger.info("chat %s: stored upload not reusable; sending the bytes", chat_id)
        upload = io.BytesIO(image.image.data)
        upload.name = image.filename  # Telethon takes the file name and type from here
        message = await self._send(chat_id, upload, image, as_document, reply_to)
        ref = upload_ref_of(message)
        if ref is not None and image.remember_upload is not None:
            image.remember_upload(ref)
        return int(message.id)

    async def send_album(
        self, chat_id: str, images: list[OutgoingImage], caption: Caption, *, reply_to: int | None
    ) -> list[int]:
        """One media group with the caption on its first item (Telegram shows it for the album).

        A group is all photos or all documents: when one image is not fit to be
        a photo (or ``--file`` asked for files), every image goes as a document.
        No buttons: Telegram takes no reply markup on a media group, so the
        images' actions (none, from the pipeline) are not offered here.
        """
        if not 2 <= len(images) <= ALBUM_MAX_ITEMS:
            raise ValueError(f"an album holds 2 to {ALBUM_MAX_ITEMS} images, not {len(images)}")
        as_document = any(image.as_file or not fits_as_photo(image.image) for image in images)
        uploads: list[io.BytesIO] = []
        for image in images:
            upload = io.BytesIO(image.image.data)
            upload.name = image.filename
            uploads.append(upload)
        captions = [caption.html()] + [""] * (len(images) - 1)

        def send(peer: Any) -> Any:
            for upload in uploads:
                upload.seek(0)  # a retry after an entity error reads the bytes again
            return self._client.send_file(
                peer,
                uploads,
                caption=captions,
                parse_mode="html",
                force_document=as_document,
                reply_to=reply_to,
            )

        messages = list(await self._addressed(chat_id, send))
        for image, message in zip(images, messages, strict=False):
            ref = upload_ref_of(message)
            if ref is not None and image.remember_upload is not None:
                image.remember_upload(ref)
        return [int(message.id) for message in messages]

    async def _send(
        self, chat_id: str, file: Any, image: OutgoingImage, as_document: bool, reply_to: int | None
    ) -> Any:
        keyboard = self._keyboard(image.actions) if image.actions else {}

        def send(peer: Any) -> Any:
            if isinstance(file, io.BytesIO):
                file.seek(0)  # a retry after an entity error reads the bytes again
            return self._client.send_file(
                peer,
                file,
                caption=image.caption.html(),
                parse_mode="html",
                force_document=as_document,
                reply_to=reply_to,
                **keyboard,
            )

        return await self._addressed(chat_id, send)

    async def find_delivered(self, chat_id: str, *, reply_to: int, job_id: str) -> int | None:
        """Our own message after the command that replies to it with the job's tag.

        A user account asks Telegram's search for the tag (``#<job id>``) among
        the messages after the command, however many came since. Bot accounts
        may not search; they read the ids after the command in pages of 100
        until a page holds no message at all, i.e. past the newest one.
        """
        tag = job_tag(job_id)
        if self._bot_account:
            return await self._find_by_ids(chat_id, reply_to=reply_to, tag=tag)
        messages = await self._addressed(
            chat_id,
            lambda peer: self._client.get_messages(
                peer, search=tag, min_id=reply_to, limit=_TAGGED_RESULTS_MAX
            ),
        )
        return _delivery_among(messages, reply_to=reply_to, tag=tag)

    async def _find_by_ids(self, chat_id: str, *, reply_to: int, tag: str) -> int | None:
        marked = int(chat_id)
        # A supergroup or channel numbers its own messages; every other chat of a
        # bot shares one numbering, so those ids are read without naming the chat
        # (Telethon would hide other chats' messages, and an empty page would lie).
        in_channel = utils.resolve_id(marked)[1] is types.PeerChannel
        first_id = reply_to + 1
        while True:
            ids = list(range(first_id, first_id + _IDS_PER_REQUEST))
            if in_channel:
                page = await self._addressed(
                    chat_id, functools.partial(self._client.get_messages, ids=ids)
                )
            else:
                with telegram_errors():
                    page = await self._client.get_messages(None, ids=ids)
            found = _delivery_among(
                [m for m in page if m is not None and utils.get_peer_id(m.peer_id) == marked],
                reply_to=reply_to,
                tag=tag,
            )
            if found is not None:
                return found
            if all(message is None for message in page):
                return None  # past the newest message: nothing was delivered
            first_id += _IDS_PER_REQUEST


def _is_entity_error(exc: Exception) -> bool:
    """Telethon's "Could not find the input entity", or Telegram refusing the peer."""
    return isinstance(exc, errors.PeerIdInvalidError) or "input entity" in str(exc)


def _delivery_among(messages: Any, *, reply_to: int, tag: str) -> int | None:
    for message in messages:
        if (
            message is not None
            and message.out
            and message.reply_to_msg_id == reply_to
            and message.media is not None
            and tag in (message.raw_text or "")
        ):
            return int(message.id)
    return None


def chat_address_of(peer: Any) -> str | None:
    """The opaque address the core keeps for a chat: ``user:<id>:<access hash>``,
    ``chat:<id>``, ``channel:<id>:<access hash>`` or ``self``; ``None`` for others."""
    if isinstance(peer, types.InputPeerUser):
        return f"user:{peer.user_id}:{peer.access_hash}"
    if isinstance(peer, types.InputPeerChat):
        return f"chat:{peer.chat_id}"
    if isinstance(peer, types.InputPeerChannel):
        return f"channel:{peer.channel_id}:{peer.access_hash}"
    if isinstance(peer, types.InputPeerSelf):
        return "self"
    return None


def input_peer_of(address: str | None) -> Any:
    """The Telethon input peer an address stands for, else ``None`` (unknown or damaged)."""
    if not address:
        return None
    kind, *numbers = address.split(":")
    try:
        values = [int(number) for number in numbers]
    except ValueError:
        return None
    if kind == "self" and not values:
        return types.InputPeerSelf()
    if kind == "chat" and len(values) == 1:
        return types.InputPeerChat(chat_id=values[0])
    if kind == "user" and len(values) == 2:
        return types.InputPeerUser(user_id=values[0], access_hash=values[1])
    if kind == "channel" and len(values) == 2:
        return types.InputPeerChannel(channel_id=values[0], access_hash=values[1])
    return None


def _address_of(message: Any) -> str | None:
    """How to reach a message's chat again, from what its update carried."""
    peer = message.input_chat
    if peer is None and isinstance(message.peer_id, types.PeerChat):
        peer = types.InputPeerChat(chat_id=message.peer_id.chat_id)  # needs no access hash
    return chat_address_of(peer)


def upload_ref_of(message: Any) -> str | None:
    """A reference to the file a sent message carries, to send it again without uploading."""
    photo = getattr(message, "photo", None)
    if photo is not None and getattr(photo, "access_hash", None) is not None:
        return f"photo:{photo.id}:{photo.access_hash}:{bytes(photo.file_reference).hex()}"
    document = getattr(message, "document", None)
    if document is not None and getattr(document, "access_hash", None) is not None:
        return (
            f"document:{document.id}:{document.access_hash}:{bytes(document.file_reference).hex()}"
        )
    return None


def input_file_of(ref: str | None, *, as_document: bool) -> Any:
    """The Telethon input file for a stored reference of the wanted kind, else ``None``."""
    if not ref:
        return None
    try:
        kind, file_id, access_hash, file_reference = ref.split(":")
        if (kind == "document") != as_document:
            return None  # a photo was asked for as a file, or the other way round
        cls = types.InputDocument if kind == "document" else types.InputPhoto
        return cls(
            id=int(file_id),
            access_hash=int(access_hash),
            file_reference=bytes.fromhex(file_reference),
        )
    except (ValueError, TypeError):
        return None


def edit_interval_for(settings: Settings) -> Callable[[str], float]:
    """Private chats get the base interval; groups and channels (negative ids) a longer one."""
    private_s = settings.status_edit_interval_s
    group_s = settings.status_edit_interval_group_s

    def interval_s(chat_id: str) -> float:
        return group_s if int(chat_id) < 0 else private_s

    return interval_s


@dataclass(frozen=True)
class AccessPolicy:
    """Whose messages are commands. Everyone else is ignored without a reply."""

    owner_id: int | None
    #: A userbot's own outgoing messages are the owner's commands.
    userbot: bool
    allowed_user_ids: frozenset[int] = field(default_factory=frozenset)
    allowed_chat_ids: frozenset[int] = field(default_factory=frozenset)

    def is_owner(self, *, outgoing: bool, sender_id: int | None) -> bool:
        """Owner-only commands check the sender, never the chat."""
        if self.userbot:
            return outgoing
        return sender_id is not None and sender_id == self.owner_id

    def names(self, sender_id: int | None) -> bool:
        """Whether the owner or ALLOWED_USER_IDS names the sender (not only their chat)."""
        if sender_id is None:
            return False
        return sender_id == self.owner_id or sender_id in self.allowed_user_ids

    def allows(self, *, outgoing: bool, sender_id: int | None, chat_id: int) -> bool:
        if self.userbot and outgoing:
            return True
        if sender_id is not None and (
            sender_id == self.owner_id or sender_id in self.allowed_user_ids
        ):
            return True
        return chat_id in self.allowed_chat_ids


def incoming_from(message: Any, policy: AccessPolicy) -> IncomingMessage | None:
    """The command in a Telethon ``Message``, or ``None`` when it is not ours to answer.

    Cheap checks come first so that strangers cost nothing: no reply, no rate-limit
    slot, no log line above DEBUG.
    """
    text = message.raw_text or ""
    if not text.lstrip().lower().startswith("/image"):
        return None
    if message.fwd_from is not None or message.post or message.via_bot_id is not None:
        return None
    sender = message.sender
    if sender is not None and getattr(sender, "bot", False) and not message.out:
        return None
    chat_id = int(message.chat_id)
    sender_id = message.sender_id
    if not policy.allows(outgoing=bool(message.out), sender_id=sender_id, chat_id=chat_id):
        logger.debug("ignored a command from %s in %s", sender_id, chat_id)
        return None
    return IncomingMessage(
        chat_id=str(chat_id),
        message_id=int(message.id),
        user_id=str(sender_id if sender_id is not None else chat_id),
        text=text,
        reply_to_message_id=message.reply_to_msg_id,
        from_owner=policy.is_owner(outgoing=bool(message.out), sender_id=sender_id),
        chat_address=_address_of(message),
        from_named_user=policy.names(sender_id),
    )


def press_from(
    event: Any, policy: AccessPolicy, texts_for: Callable[[str], Texts] = english_for
) -> ActionPress | ActionAnswer | None:
    """The press in a Telethon ``CallbackQuery`` event; an answer (in the chat's
    language) when it is refused here (someone the bot does not serve); ``None``
    when the button is not ours."""
    action = action_of(event.data)
    if action is None:
        return None
    sender_id = event.sender_id
    chat_id = int(event.chat_id)
    if not policy.allows(outgoing=False, sender_id=sender_id, chat_id=chat_id):
        # Whoever it is, it is not the person who asked: that person was let in.
        return ActionAnswer(NotYourButton().message_in(texts_for(str(chat_id))))
    return ActionPress(
        chat_id=str(chat_id),
        message_id=int(event.message_id),
        user_id=str(sender_id),
        action=action,
        from_owner=policy.is_owner(outgoing=False, sender_id=sender_id),
        chat_address=chat_address_of(event.input_chat),
    )


# -- which Telegram: production, the test environment or a server of one's own -------

#: Telegram's test data centres, as Telegram's own apps and client libraries know them.
TEST_DC_ADDRESSES = frozenset(
    ipaddress.ip_address(address).compressed
    for address in (
        "149.154.175.10",
        "149.154.167.40",
        "149.154.175.117",
        "2001:b28:f23d:f001::e",
        "2001:67c:4e8:f002::e",
        "2001:b28:f23d:f003::e",
    )
)
#: Telegram's production data centres: Telethon's starting point and the usual DC 1-5.
PRODUCTION_DC_ADDRESSES = frozenset(
    ipaddress.ip_address(address).compressed
    for address in (
        DEFAULT_IPV4_IP,
        DEFAULT_IPV6_IP,
        "149.154.175.53",
        "149.154.167.51",
        "149.154.175.100",
        "149.154.167.91",
        "91.108.56.130",
        "2001:b28:f23d:f001::a",
        "2001:67c:4e8:f002::a",
        "2001:b28:f23d:f003::a",
        "2001:67c:4e8:f004::a",
        "2001:b28:f23f:f005::a",
    )
)
#: Telegram's own networks (https://core.telegram.org/resources/cidr.txt). A data
#: centre a session was moved to (PHONE_MIGRATE and friends) is somewhere in here,
#: not necessarily one of the addresses above.
TELEGRAM_NETWORKS = tuple(
    ipaddress.ip_network(network)
    for network in (
        "91.105.192.0/23",
        "91.108.4.0/22",
        "91.108.8.0/22",
        "91.108.12.0/22",
        "91.108.16.0/22",
        "91.108.20.0/22",
        "91.108.56.0/22",
        "95.161.64.0/20",
        "149.154.160.0/20",
        "185.76.151.0/24",
        "2001:b28:f23c::/48",
        "2001:b28:f23d::/48",
        "2001:b28:f23f::/48",
        "2001:67c:4e8::/48",
        "2a0a:f280::/32",
    )
)

#: ``telegram``: Telegram's network, but not an address known to be test or production.
ServerKind = Literal["production", "test", "telegram", "custom"]
_KIND_NAMES: dict[ServerKind, str] = {
    "production": "production server",
    "test": "test server",
    "telegram": "Telegram server",
    "custom": "custom server",
}


def _normal_host(host: str) -> str:
    try:
        return ipaddress.ip_address(host).compressed
    except ValueError:
        return host.lower().removesuffix(".")


def server_kind(host: str) -> ServerKind:
    """Which Telegram an address belongs to; a host name is never one of Telegram's DCs."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return "custom"
    if ip.compressed in TEST_DC_ADDRESSES:
        return "test"
    if ip.compressed in PRODUCTION_DC_ADDRESSES:
        return "production"
    if any(ip in network for network in TELEGRAM_NETWORKS):
        return "telegram"
    return "custom"


def _endpoint_label(dc_id: int, host: str, port: int | None) -> str:
    bare = _normal_host(host)
    shown = f"[{bare}]" if ":" in bare else bare
    where = f"{shown}:{port}" if port else shown
    return f"{_KIND_NAMES[server_kind(bare)]} DC {dc_id} at {where}"


def server_label(settings: Settings) -> str:
    """Which server ``sakaibot login``/``run`` talk to, for the lines people read."""
    server = settings.telegram_server
    if server is None:
        return "production"
    return _endpoint_label(server.dc_id, server.host, server.port)


def _same_telegram(host: str, port: int | None, server: TelegramServer | None) -> bool:
    """Whether an auth key made at ``host:port`` belongs where ``server`` points.

    Telegram moves an account to its home data centre at login, so a session of
    the test environment (or production) may name another DC of the same
    environment than the configured one; that is no mismatch. A server of one's
    own must match exactly.
    """
    stored = server_kind(host)
    configured: ServerKind = "production" if server is None else server_kind(server.host)
    if stored == "custom" or configured == "custom":
        return (
            server is not None
            and stored == configured
            and _normal_host(host) == server.host
            and port == server.port
        )
    if "telegram" in (stored, configured):
        return True  # Telegram's network; which environment cannot be told apart
    return stored == configured


def _session_place(settings: Settings) -> str:
    if settings.telegram_session is not None:
        return "TELEGRAM_SESSION"
    return f"{settings.session_path}.session"


def check_session_server(session: Any, settings: Settings) -> None:
    """Refuse a logged-in session made against another server than the configured one.

    Its auth key is only known to the server that made it: used anywhere else it
    fails obscurely (the session looks logged out, or the connection breaks). A
    session without an auth key yet may go anywhere.
    """
    host = session.server_address
    # Telethon's AuthKey is false when empty (a session file that never logged in).
    if not session.auth_key or not host:
        return
    port = session.port
    if _same_telegram(host, port, settings.telegram_server):
        return
    made_at = _endpoint_label(session.dc_id, host, port)
    if settings.telegram_server is None:
        configured = "TELEGRAM_SERVER is unset, which means production"
    else:
        configured = f"TELEGRAM_SERVER says {server_label(settings)}"
    raise ConfigError(
        [
            f"the session in {_session_place(settings)} was made against {made_at}, but "
            f"{configured}; log in again with `sakaibot login` using a separate "
            "SAKAIBOT_DATA_DIR (or TELEGRAM_SESSION) for each server"
        ]
    )


def _point_session_at(session: Any, server: TelegramServer | None) -> None:
    """Send a session to the configured server where its auth key allows it.

    A session that is not logged in yet goes to the configured DC. A logged-in
    one (of the same environment: :func:`check_session_server` came first)
    keeps its DC, whose auth key it holds: the account's home DC, where Telegram
    moved it at login. Only the address or port of that same DC may change
    (e.g. port 80 instead of 443): an auth key is valid throughout its DC.
    """
    if server is not None:
        if session.auth_key and session.dc_id != server.dc_id:
            return
        if (session.dc_id, session.server_address, session.port) != (
            server.dc_id,
            server.host,
            server.port,
        ):
            session.set_dc(server.dc_id, server.host, server.port)  # keeps the auth key
    elif session.auth_key:
        return
    elif session.server_address and server_kind(session.server_address) in ("test", "custom"):
        # Left over from an unfinished login elsewhere: production starts at Telethon's DC.
        session.set_dc(DEFAULT_DC_ID, DEFAULT_IPV4_IP, DEFAULT_PORT)


#: MTProto encrypts with 2048-bit RSA keys; a shorter one fails at the first connection.
MIN_PUBLIC_KEY_BITS = 2048


def read_server_public_key(path: Path) -> bytes:
    """The RSA public key in ``path`` as PKCS#1 PEM, the form Telethon registers.

    PKCS#1 (``BEGIN RSA PUBLIC KEY``) and SubjectPublicKeyInfo (``BEGIN PUBLIC
    KEY``) are both read, with ``rsa``, Telethon's own RSA library (only this
    module imports it). Anything else is a :class:`ValueError` with one line
    saying what is wrong and what to do.
    """
    data = read_server_key_file(path)
    key: rsa.PublicKey | None = None
    if len(data) <= MAX_PUBLIC_KEY_FILE_BYTES:
        for load in (rsa.PublicKey.load_pkcs1, rsa.PublicKey.load_pkcs1_openssl_pem):
            try:
                key = load(data)
                break
            except Exception:  # rsa and pyasn1 raise many kinds on a bad file
                continue
    if key is None:
        if b"PRIVATE KEY-----" in data:
            raise ValueError(
                f"{path} holds a private key; give the server's public key instead "
                "(never put a private key on the bot's machine)"
            )
        raise ValueError(f"{path} holds no RSA public key in PEM form; {PUBLIC_KEY_HINT}")
    bits = key.n.bit_length()
    if bits < MIN_PUBLIC_KEY_BITS:
        raise ValueError(
            f"{path} holds a {bits}-bit RSA key, but MTProto servers use "
            f"{MIN_PUBLIC_KEY_BITS}-bit keys; check that this is the server's public key"
        )
    return key.save_pkcs1()


def _register_server_key(settings: Settings) -> None:
    path = settings.telegram_server_public_key
    if path is None:
        return
    try:
        pem = read_server_public_key(path)
    except ValueError as exc:  # not a key, or the file changed since the settings were read
        raise ConfigError([f"TELEGRAM_SERVER_PUBLIC_KEY: {exc}"]) from None
    # Keys are looked up by the fingerprint the server names; adding one is idempotent.
    telethon_rsa.add_key(pem.decode("ascii"), old=False)


def _string_session_problem(settings: Settings) -> str | None:
    server = settings.telegram_server
    if server is None or server.is_ip:
        return None
    return (
        f"TELEGRAM_SERVER: a string session stores the server as an IP address, so "
        f"{server.host!r} cannot be used with it; give the server's IP address instead "
        "of its host name, or use the session file"
    )


# -- the client, login and the run loop -------------------------------------------

#: Where Telethon's own log lines go (its ``base_logger``).
TELETHON_LOGGER = "sakaibot.telethon"
#: Telethon's default: a running bot rides out a short outage.
RUN_CONNECTION_RETRIES = 5
#: Someone waits at the terminal: "no network" must come in seconds, not after
#: five retries with their pauses.
LOGIN_CONNECTION_RETRIES = 1

BAD_STRING_SESSION = (
    "TELEGRAM_SESSION is not a string session (cut short, or with characters added); "
    "paste the whole line that `sakaibot login --string-session` printed, or unset "
    "TELEGRAM_SESSION to use the session file"
)


def _string_session(text: str) -> StringSession:
    try:
        # Surrounding spaces and line breaks come with copying; the string has none.
        return StringSession(text.strip())
    except (ValueError, struct.error) as exc:  # Telethon's checks, base64 and unpacking
        raise ConfigError([BAD_STRING_SESSION]) from exc


def build_client(settings: Settings, *, connection_retries: int = RUN_CONNECTION_RETRIES) -> Any:
    """A Telethon client on the string session or the session file in the data directory.

    With ``TELEGRAM_SERVER`` set, a session that is not logged in yet is sent to
    that server, and ``TELEGRAM_SERVER_PUBLIC_KEY`` is registered with Telethon.
    A session logged in against another server is refused (:func:`check_session_server`),
    and so is a ``TELEGRAM_SESSION`` that is not a string session.
    """
    api_id, api_hash = settings.telegram_api_id, settings.telegram_api_hash
    if api_id is None or api_hash is None:
        raise ConfigError(settings.telegram_problems())
    session: Any
    if settings.telegram_session is not None:
        problem = _string_session_problem(settings)
        if problem is not None:
            raise ConfigError([problem])
        session = _string_session(settings.telegram_session.get_secret_value())
    else:
        make_private_dir(settings.sakaibot_data_dir)
        session = SQLiteSession(str(settings.session_path))
        narrow_file(Path(f"{settings.session_path}.session"))  # it holds the account's key
    try:
        check_session_server(session, settings)
        _point_session_at(session, settings.telegram_server)
        _register_server_key(settings)
    except BaseException:
        session.close()
        raise
    # Telethon sends a session whose address family differs from ``use_ipv6``
    # back to its default production DC when it connects: keep them the same.
    use_ipv6 = ":" in (session.server_address or "")
    return TelegramClient(
        session,
        api_id,
        api_hash.get_secret_value(),
        use_ipv6=use_ipv6,
        flood_sleep_threshold=0,
        connection_retries=connection_retries,
        base_logger=TELETHON_LOGGER,
    )


@contextlib.contextmanager
def session_lock(settings: Settings) -> Iterator[None]:
    """Refuse to connect one session file twice (Telegram answers AUTH_KEY_DUPLICATED)."""
    if settings.telegram_session is not None:
        yield
        return
    settings.sakaibot_data_dir.mkdir(parents=True, exist_ok=True)
    lock_path = settings.sakaibot_data_dir / "sakaibot.lock"
    handle: IO[str] = lock_path.open("w")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError(
                [
                    f"another SakaiBot is already running with the session in "
                    f"{settings.sakaibot_data_dir}; stop it first (one Telegram session "
                    "must never be connected twice)"
                ]
            ) from None
        yield
    finally:
        handle.close()


PHONE_PROMPT = "Phone number (international format, e.g. +44...): "
CODE_PROMPT = "The code Telegram sent you: "
PASSWORD_PROMPT = "Two-step verification password: "
#: How often a phone number, code or password may be typed before the login stops.
LOGIN_ATTEMPTS = 3

_T = TypeVar("_T")


async def login(
    settings: Settings,
    out: TextIO,
    *,
    bot_token: str | None,
    string_session: bool = False,
    verbose: bool = False,
    ask: Callable[[str], str] = input,
    ask_secret: Callable[[str], str] = getpass.getpass,
) -> int:
    """Interactive login (phone, code, 2FA password) or a bot token; saves the session.

    Every way it can fail ends in one typed error (:class:`~sakaibot.errors.LoginFailed`,
    :class:`~sakaibot.errors.TelegramUnreachable`, :class:`~sakaibot.errors.ConfigError`)
    and a session file this login created is removed unless it logged in.
    ``ask``/``ask_secret`` read the answers (``input`` and ``getpass`` at a terminal).
    """
    if string_session:
        problem = _string_session_problem(settings)
        if problem is not None:
            raise ConfigError([problem])
    label = server_label(settings)
    with session_lock(settings), _telethon_quiet(verbose=verbose):
        session_file = _session_file(settings)
        created = session_file is not None and not session_file.exists()
        client: Any = None
        logged_in = False
        try:
            client = build_client(settings, connection_retries=LOGIN_CONNECTION_RETRIES)
            out.write(f"Logging in on {label}.\n")
            out.flush()
            with _login_errors(label):
                await client.connect()
                if not await client.is_user_authorized():
                    await _sign_in(client, out, bot_token=bot_token, ask=ask, ask_secret=ask_secret)
                logged_in = True
                me = await client.get_me()
            kind = "bot" if getattr(me, "bot", False) else "user"
            out.write(f"Logged in as {_describe_account(me)} ({kind} account) on {label}.\n")
            if string_session:
                out.write(
                    "Your string session (keep it secret; put it in TELEGRAM_SESSION):\n"
                    f"{export_string_session(client)}\n"
                )
            elif settings.telegram_session is None:
                out.write(f"Session saved in {settings.session_path}.session\n")
            out.write("Start the bot with: sakaibot run\n")
        finally:
            if client is not None:
                await client.disconnect()  # closes the session file too
            if created and not logged_in and session_file is not None:
                # Holds an auth key at most, never a login: the next try starts clean.
                session_file.unlink(missing_ok=True)
                logger.debug("removed %s: the login did not finish", session_file)
    return 0


def _session_file(settings: Settings) -> Path | None:
    if settings.telegram_session is not None:
        return None
    return Path(f"{settings.session_path}.session")


@contextlib.contextmanager
def _telethon_quiet(*, verbose: bool) -> Iterator[None]:
    """Keep Telethon's connection chatter ("Connecting to ...") out of the login prompts.

    Warnings too: a failed connection attempt is told once, by our own line.
    ``-v`` shows everything.
    """
    if verbose:
        yield
        return
    loggers = [logging.getLogger(TELETHON_LOGGER), logging.getLogger("telethon")]
    levels = [each.level for each in loggers]
    for each in loggers:
        each.setLevel(max(each.level, logging.ERROR))
    try:
        yield
    finally:
        for each, level in zip(loggers, levels, strict=True):
            each.setLevel(level)


@contextlib.contextmanager
def _login_errors(label: str) -> Iterator[None]:
    """Translate what Telethon raises while logging in, exactly once."""
    try:
        yield
    except errors.PhoneCodeExpiredError as exc:
        raise LoginFailed("code_expired") from exc
    except (errors.AccessTokenInvalidError, errors.AccessTokenExpiredError) as exc:
        raise LoginFailed("bot_token_invalid") from exc
    except errors.PhoneNumberFloodError as exc:
        raise LoginFailed("flood") from exc
    except errors.FloodError as exc:  # FLOOD_WAIT_X and friends
        seconds = getattr(exc, "seconds", None)
        raise LoginFailed("flood", retry_after_s=float(seconds) if seconds else None) from exc
    except (errors.ApiIdInvalidError, errors.ApiIdPublishedFloodError) as exc:
        raise ConfigError(
            [
                "TELEGRAM_API_ID and TELEGRAM_API_HASH: Telegram does not accept this app; "
                "copy both again from https://my.telegram.org (API development tools)"
            ]
        ) from exc
    except errors.RPCError as exc:
        logger.debug("login refused: %s", exc)
        raise LoginFailed("refused", detail=type(exc).__name__) from exc
    except (OSError, ConnectionError, TimeoutError, asyncio.IncompleteReadError) as exc:
        raise TelegramUnreachable(f"{type(exc).__name__} from {label}", during_login=True) from exc


async def _sign_in(
    client: Any,
    out: TextIO,
    *,
    bot_token: str | None,
    ask: Callable[[str], str],
    ask_secret: Callable[[str], str],
) -> None:
    if bot_token is not None:
        await client.sign_in(bot_token=bot_token.strip())
        return

    async def send_code(answer: str) -> str:
        phone = utils.parse_phone(answer.strip())
        if not phone:
            raise errors.PhoneNumberInvalidError(request=None)
        try:
            await client.send_code_request(phone)
        except errors.PhoneNumberUnoccupiedError as exc:
            raise LoginFailed("no_account", detail=f"+{phone}") from exc
        except errors.PhoneNumberBannedError as exc:
            raise LoginFailed("phone_banned", detail=f"+{phone}") from exc
        return str(phone)

    phone = await _ask_until_accepted(
        out,
        ask,
        PHONE_PROMPT,
        send_code,
        wrong=errors.PhoneNumberInvalidError,
        retry_note="Telegram does not take that as a phone number.",
        gave_up=lambda answer, _: LoginFailed("phone_invalid", detail=repr(answer.strip())),
    )

    async def send_login_code(answer: str) -> bool:
        code = answer.strip()
        if not code:
            # Telethon would take an empty code for "send me a code" and send another.
            raise errors.PhoneCodeEmptyError(request=None)
        try:
            await client.sign_in(phone, code=code)
        except errors.SessionPasswordNeededError:
            return True
        except errors.PhoneNumberUnoccupiedError as exc:  # Telegram asks to sign up
            raise LoginFailed("no_account", detail=f"+{phone}") from exc
        return False

    needs_password = await _ask_until_accepted(
        out,
        ask,
        CODE_PROMPT,
        send_login_code,
        wrong=(errors.PhoneCodeInvalidError, errors.PhoneCodeEmptyError),
        retry_note="That code is not right.",
        gave_up=lambda _, attempts: LoginFailed("code_wrong", attempts=attempts),
    )
    if not needs_password:
        return

    async def send_password(answer: str) -> None:
        if not answer:  # never stripped: spaces may belong to a password
            # Telethon would take an empty password for "send me a code".
            raise errors.PasswordHashInvalidError(request=None)
        await client.sign_in(phone=phone, password=answer)

    await _ask_until_accepted(
        out,
        ask_secret,
        PASSWORD_PROMPT,
        send_password,
        wrong=errors.PasswordHashInvalidError,
        retry_note="That password is not right.",
        gave_up=lambda _, attempts: LoginFailed("password_wrong", attempts=attempts),
    )


async def _ask_until_accepted(
    out: TextIO,
    ask: Callable[[str], str],
    prompt: str,
    submit: Callable[[str], Awaitable[_T]],
    *,
    wrong: type[Exception] | tuple[type[Exception], ...],
    retry_note: str,
    gave_up: Callable[[str, int], LoginFailed],
) -> _T:
    """Ask until Telegram takes the answer, :data:`LOGIN_ATTEMPTS` times at most.

    ``wrong`` is what ``submit`` raises for an answer worth asking again;
    ``gave_up(last answer, attempts)`` is the error when the attempts run out.
    """
    answer = ""
    for attempt in range(1, LOGIN_ATTEMPTS + 1):
        try:
            answer = ask(prompt)
        except EOFError:  # stdin closed or not a terminal: nobody will answer
            raise LoginFailed("input_ended") from None
        try:
            return await submit(answer)
        except wrong as exc:
            logger.debug("login answer refused: %s", exc)
            left = LOGIN_ATTEMPTS - attempt
            if left:
                out.write(f"{retry_note} {plural(left, 'try', 'tries')} left.\n")
                out.flush()
    raise gave_up(answer, LOGIN_ATTEMPTS)


def export_string_session(client: Any) -> str:
    """The client's session as a string, for ``TELEGRAM_SESSION`` in containers."""
    return str(StringSession.save(client.session))


def _describe_account(me: Any) -> str:
    username = getattr(me, "username", None)
    name = f"@{username}" if username else (getattr(me, "first_name", None) or "unknown")
    return f"{name} (id {me.id})"


async def _no_actions(press: ActionPress) -> ActionAnswer:
    return ActionAnswer()


@dataclass
class TelegramFrontEnd:
    """Feeds a client's new messages and button presses to the bot, for the allowed
    senders only."""

    handle: Callable[[IncomingMessage], Any]
    policy: AccessPolicy
    press: Callable[[ActionPress], Awaitable[ActionAnswer]] = _no_actions
    #: The language each chat is answered in (a press refused here is told in it).
    texts_for: Callable[[str], Texts] = english_for

    async def on_callback(self, event: Any) -> None:
        """A pressed inline button: run its action, then answer the press (which
        stops the button's spinner), with the bot's short reply."""
        press = press_from(event, self.policy, self.texts_for)
        answer = ActionAnswer()
        if isinstance(press, ActionAnswer):
            answer = press
        elif press is not None:
            try:
                answer = await self.press(press)
            except Exception:
                logger.exception("handling a press on message %s failed", press.message_id)
        text = answer.text
        if text is not None and len(text) > CALLBACK_ANSWER_MAX_CHARS:
            text = text[: CALLBACK_ANSWER_MAX_CHARS - 1] + "…"
        try:
            with telegram_errors():
                await event.answer(text, alert=answer.alert)
        except ChatError as exc:
            # Too late (a query lives about 15 s) or offline: the action was done anyway.
            logger.info("could not answer a button press: %s", exc)

    async def on_new_message(self, event: Any) -> None:
        incoming = incoming_from(event.message, self.policy)
        if incoming is None:
            return
        try:
            await self.handle(incoming)
        except Exception:
            # One bad update must not take the handler down for everyone.
            logger.exception("handling message %s failed", incoming.message_id)


async def run(settings: Settings, out: TextIO) -> int:
    """``sakaibot run``: connect, serve until SIGINT/SIGTERM, stop cleanly."""
    from sakaibot.app import build_app

    registry = settings.model_registry()
    client = build_client(settings)
    label = server_label(settings)
    with session_lock(settings):
        await _connect(client, label)
        try:
            if not await client.is_user_authorized():
                raise ConfigError(
                    ["the Telegram session is not logged in: run `sakaibot login` first"]
                )
            me = await client.get_me()
            userbot = not getattr(me, "bot", False)
            policy = AccessPolicy(
                owner_id=me.id if userbot else settings.telegram_owner_id,
                userbot=userbot,
                allowed_user_ids=frozenset(settings.allowed_user_ids),
                allowed_chat_ids=frozenset(settings.allowed_chat_ids),
            )
            chat = TelegramChat(client, bot_account=not userbot)
            app = build_app(
                settings,
                chat,
                edit_interval_s=edit_interval_for(settings),
                connected=chat.connected,
            )
            front = TelegramFrontEnd(
                handle=app.bot.handle,
                policy=policy,
                press=app.bot.handle_action,
                texts_for=app.languages.for_chat,
            )
            new_messages = events.NewMessage()
            presses = events.CallbackQuery()
            # Recovered jobs are queued first, then new commands are read.
            await app.start()
            client.add_event_handler(front.on_new_message, new_messages)
            if not userbot:  # only a bot account sends buttons
                client.add_event_handler(front.on_callback, presses)
            mode = "userbot" if userbot else "bot"
            logger.info(
                "running as %s (%s) on %s; models: %s",
                _describe_account(me),
                mode,
                label,
                ", ".join(registry.names()),
            )
            out.write(
                f"SakaiBot is running as {_describe_account(me)} ({mode}) on {label}; "
                f"models: {', '.join(registry.names())}. Ctrl-C stops it.\n"
            )
            out.flush()
            await _serve_until_stopped(client)
            logger.info("stopping: no new commands; finishing running jobs")
            client.remove_event_handler(front.on_new_message, new_messages)
            if not userbot:
                client.remove_event_handler(front.on_callback, presses)
            await app.shutdown(settings.shutdown_grace_s)
        finally:
            await client.disconnect()
    out.write("SakaiBot stopped.\n")
    return 0


async def _connect(client: Any, label: str) -> None:
    try:
        await client.connect()
    except (OSError, ConnectionError, TimeoutError, asyncio.IncompleteReadError) as exc:
        raise TelegramUnreachable(f"{type(exc).__name__} from {label}") from exc


async def _serve_until_stopped(client: Any) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        stopped = asyncio.ensure_future(stop.wait())
        disconnected = asyncio.ensure_future(client.disconnected)
        await asyncio.wait({stopped, disconnected}, return_when=asyncio.FIRST_COMPLETED)
        for pending in (stopped, disconnected):
            pending.cancel()
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)


# -- sakaibot verify: the Telegram side --------------------------------------------

#: The first bytes of every SQLite file, so a stray file is named without opening it.
_SQLITE_HEADER = b"SQLite format 3\x00"


@dataclass(frozen=True)
class SessionCheck:
    """What ``sakaibot verify`` can tell of the Telegram session without connecting.

    ``ok`` is ``None`` when there is nothing to check yet (no login so far).
    """

    ok: bool | None
    text: str


def check_session_offline(settings: Settings) -> SessionCheck:
    """Whether a session is present and readable, and made for the configured server.

    Never connects: only the string session or the session file is read.
    """
    place = _session_place(settings)
    session: Any
    if settings.telegram_session is not None:
        try:
            session = StringSession(settings.telegram_session.get_secret_value().strip())
        except Exception:  # Telethon lets ValueError, struct.error or binascii.Error out
            return SessionCheck(
                False,
                "TELEGRAM_SESSION is not a Telethon string session; print a new one with "
                "`sakaibot login --string-session`",
            )
    else:
        path = settings.session_path.with_suffix(".session")  # Telethon's name for it
        if not path.exists():
            return SessionCheck(
                None, f"no session yet in {path}; log in once with `sakaibot login`"
            )
        try:
            with path.open("rb") as handle:
                header = handle.read(len(_SQLITE_HEADER))
        except OSError as exc:
            return SessionCheck(
                False,
                f"{path} cannot be read ({exc.strerror or type(exc).__name__}); let the user "
                "that runs SakaiBot read and write it",
            )
        if header != _SQLITE_HEADER:
            return SessionCheck(
                False,
                f"{path} is not a Telethon session file; move it away and log in again "
                "with `sakaibot login`",
            )
        try:
            session = SQLiteSession(str(settings.session_path))
        except Exception as exc:  # sqlite3's errors, raised inside Telethon
            return SessionCheck(
                False,
                f"{path} cannot be read as a Telethon session ({type(exc).__name__}); move "
                "it away and log in again with `sakaibot login`",
            )
    try:
        if not session.auth_key:
            return SessionCheck(
                None, f"the session in {place} is not logged in yet; run `sakaibot login`"
            )
        try:
            check_session_server(session, settings)
        except ConfigError as exc:
            return SessionCheck(False, "; ".join(exc.problems))
        return SessionCheck(
            True,
            f"session in {place} (DC {session.dc_id}); `sakaibot verify --telegram` asks "
            "Telegram which account it is",
        )
    finally:
        session.close()


async def describe_login(settings: Settings) -> str:
    """``sakaibot verify --telegram``: connect, and say which account the session is.

    Raises :class:`ConfigError` when the session is not logged in (or in use by a
    running bot), :class:`TelegramUnreachable` or :class:`ChatError` otherwise.
    """
    client = build_client(settings)
    label = server_label(settings)
    with session_lock(settings):
        await _connect(client, label)
        try:
            with telegram_errors():
                if not await client.is_user_authorized():
                    raise ConfigError(
                        ["the Telegram session is not logged in: run `sakaibot login` first"]
                    )
                me = await client.get_me()
        finally:
            await client.disconnect()
    kind = "bot" if getattr(me, "bot", False) else "user"
    return f"logged in as {_describe_account(me)} ({kind} account) on {label}"

"""The Telegram front end over Telethon: the only module that imports ``telethon``.

It adds to the core only what Telegram has: who may use the bot, its error
types translated into the core's (:class:`~sakaibot.errors.FloodWait`,
:class:`~sakaibot.errors.MessageNotModified`, :class:`~sakaibot.errors.ChatError`),
photo-versus-document delivery within Telegram's limits, HTML captions, a
longer status interval in groups, login, and a clean run/stop.

``flood_sleep_threshold`` is 0 on purpose: Telethon would otherwise sleep
through waits of up to 60 s inside whichever coroutine made the call, which
would stall a status lane or an upload silently. Every flood wait reaches us
as an exception and the core decides: status lanes mute, deliveries wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import getpass
import io
import logging
import signal
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any, TextIO

from telethon import TelegramClient, errors, events
from telethon.sessions import StringSession
from telethon.tl import types

from sakaibot.captions import cut_to_utf16, job_tag
from sakaibot.chat.port import IncomingMessage, OutgoingImage
from sakaibot.errors import (
    ChatError,
    ConfigError,
    FloodWait,
    MessageNotModified,
    TelegramUnreachable,
)
from sakaibot.generation import GeneratedImage
from sakaibot.settings import Settings

logger = logging.getLogger(__name__)

#: Telegram's limits for a photo; anything else goes as a document.
PHOTO_MAX_BYTES = 10 * 1024 * 1024
PHOTO_MAX_SIDES_PX = 10_000
PHOTO_MAX_ASPECT = 20.0
TEXT_LIMIT_UTF16 = 4096
#: How many messages after a command are searched for its delivered image.
_DELIVERY_LOOKAHEAD = 200


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
    """The chat port on a Telethon client. Chat ids are Telethon's marked peer ids."""

    def __init__(self, client: Any) -> None:
        self._client = client

    async def send_text(self, chat_id: str, text: str, *, reply_to: int | None) -> int:
        # Plain text, no parse mode: user text can never be taken for markup.
        with telegram_errors():
            message = await self._client.send_message(
                int(chat_id),
                cut_to_utf16(text, TEXT_LIMIT_UTF16),
                reply_to=reply_to,
                parse_mode=None,
                link_preview=False,
            )
        return int(message.id)

    async def edit_text(self, chat_id: str, message_id: int, text: str) -> None:
        with telegram_errors():
            await self._client.edit_message(
                int(chat_id),
                message_id,
                cut_to_utf16(text, TEXT_LIMIT_UTF16),
                parse_mode=None,
                link_preview=False,
            )

    async def delete_message(self, chat_id: str, message_id: int) -> None:
        with telegram_errors():
            await self._client.delete_messages(int(chat_id), [message_id])

    async def send_image(self, chat_id: str, image: OutgoingImage, *, reply_to: int | None) -> int:
        as_document = image.as_file or not fits_as_photo(image.image)
        reused = input_file_of(image.upload_ref, as_document=as_document)
        if reused is not None:
            try:
                with telegram_errors():
                    message = await self._send(chat_id, reused, image, as_document, reply_to)
                return int(message.id)
            except (FloodWait, MessageNotModified):
                raise
            except ChatError:
                # An old reference may have expired: the bytes always work.
                logger.info("chat %s: stored upload not reusable; sending the bytes", chat_id)
        upload = io.BytesIO(image.image.data)
        upload.name = image.filename  # Telethon takes the file name and type from here
        with telegram_errors():
            message = await self._send(chat_id, upload, image, as_document, reply_to)
        ref = upload_ref_of(message)
        if ref is not None and image.remember_upload is not None:
            image.remember_upload(ref)
        return int(message.id)

    async def _send(
        self, chat_id: str, file: Any, image: OutgoingImage, as_document: bool, reply_to: int | None
    ) -> Any:
        return await self._client.send_file(
            int(chat_id),
            file,
            caption=image.caption.html(),
            parse_mode="html",
            force_document=as_document,
            reply_to=reply_to,
        )

    async def find_delivered(self, chat_id: str, *, reply_to: int, job_id: str) -> int | None:
        """Our own message after the command that replies to it with the job's tag.

        Looked up by message id, which bot accounts may do too (they cannot read
        a chat's history).
        """
        tag = job_tag(job_id)
        ids = list(range(reply_to + 1, reply_to + 1 + _DELIVERY_LOOKAHEAD))
        with telegram_errors():
            messages = await self._client.get_messages(int(chat_id), ids=ids)
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
    )


# -- the client, login and the run loop -------------------------------------------


def build_client(settings: Settings) -> Any:
    """A Telethon client on the string session or the session file in the data directory."""
    api_id, api_hash = settings.telegram_api_id, settings.telegram_api_hash
    if api_id is None or api_hash is None:
        raise ConfigError(settings.telegram_problems())
    session: Any
    if settings.telegram_session is not None:
        session = StringSession(settings.telegram_session.get_secret_value())
    else:
        settings.sakaibot_data_dir.mkdir(parents=True, exist_ok=True)
        session = str(settings.session_path)
    return TelegramClient(
        session,
        api_id,
        api_hash.get_secret_value(),
        flood_sleep_threshold=0,
        base_logger="sakaibot.telethon",
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


async def login(
    settings: Settings, out: TextIO, *, bot_token: str | None, string_session: bool = False
) -> int:
    """Interactive login (phone, code, 2FA password) or a bot token; saves the session."""
    client = build_client(settings)
    with session_lock(settings):
        if bot_token is not None:
            await client.start(bot_token=bot_token)
        else:
            await client.start(
                phone=lambda: input("Phone number (international format, e.g. +44...): "),
                code_callback=lambda: input("The code Telegram sent you: "),
                password=lambda: getpass.getpass("Two-step verification password: "),
            )
        try:
            me = await client.get_me()
            kind = "bot" if getattr(me, "bot", False) else "user"
            out.write(f"Logged in as {_describe_account(me)} ({kind} account).\n")
            if string_session:
                out.write(
                    "Your string session (keep it secret; put it in TELEGRAM_SESSION):\n"
                    f"{export_string_session(client)}\n"
                )
            elif settings.telegram_session is None:
                out.write(f"Session saved in {settings.session_path}.session\n")
            out.write("Start the bot with: sakaibot run\n")
        finally:
            await client.disconnect()
    return 0


def export_string_session(client: Any) -> str:
    """The client's session as a string, for ``TELEGRAM_SESSION`` in containers."""
    return str(StringSession.save(client.session))


def _describe_account(me: Any) -> str:
    username = getattr(me, "username", None)
    name = f"@{username}" if username else (getattr(me, "first_name", None) or "unknown")
    return f"{name} (id {me.id})"


@dataclass
class TelegramFrontEnd:
    """Feeds a client's new messages to the bot, for the allowed senders only."""

    handle: Callable[[IncomingMessage], Any]
    policy: AccessPolicy

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
    with session_lock(settings):
        await _connect(client)
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
            chat = TelegramChat(client)
            app = build_app(settings, chat, edit_interval_s=edit_interval_for(settings))
            front = TelegramFrontEnd(handle=app.bot.handle, policy=policy)
            new_messages = events.NewMessage()
            # Recovered jobs are queued first, then new commands are read.
            await app.start()
            client.add_event_handler(front.on_new_message, new_messages)
            mode = "userbot" if userbot else "bot"
            logger.info(
                "running as %s (%s); models: %s",
                _describe_account(me),
                mode,
                ", ".join(registry.names()),
            )
            out.write(
                f"SakaiBot is running as {_describe_account(me)} ({mode}); "
                f"models: {', '.join(registry.names())}. Ctrl-C stops it.\n"
            )
            out.flush()
            await _serve_until_stopped(client)
            logger.info("stopping: no new commands; finishing running jobs")
            client.remove_event_handler(front.on_new_message, new_messages)
            await app.shutdown(settings.shutdown_grace_s)
        finally:
            await client.disconnect()
    out.write("SakaiBot stopped.\n")
    return 0


async def _connect(client: Any) -> None:
    try:
        await client.connect()
    except (OSError, ConnectionError, TimeoutError, asyncio.IncompleteReadError) as exc:
        raise TelegramUnreachable(type(exc).__name__) from exc


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

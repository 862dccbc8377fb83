"""The chat port: the one narrow interface between the core and any front end.

A front end (the console, Telegram) implements :class:`ChatPort` and feeds
:class:`IncomingMessage` values to the bot. Nothing in the core knows which
front end is running. Adapters translate their library's errors into
:class:`~sakaibot.errors.FloodWait`, :class:`~sakaibot.errors.MessageNotModified`
or :class:`~sakaibot.errors.ChatError`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol, get_args

from sakaibot.captions import Caption
from sakaibot.generation import GeneratedImage


@dataclass(frozen=True)
class IncomingMessage:
    """A message that may be a command."""

    chat_id: str
    message_id: int
    user_id: str
    text: str
    #: The message this one replies to, if any (``/image cancel`` as a reply).
    reply_to_message_id: int | None = None
    #: From the bot's owner: owner-only commands (stats, cache) check this.
    from_owner: bool = False
    #: What the front end needs to reach this chat again after a restart, opaque
    #: to the core (Telegram: the peer kind, id and access hash). Kept with each job.
    chat_address: str | None = None
    #: The sender is named by the operator (Telegram: in ALLOWED_USER_IDS), not
    #: only let in by the chat they write in: trusted with per-chat settings.
    from_named_user: bool = False


#: What a one-tap action does: generate again, send as a file, cancel.
ActionKind = Literal["again", "file", "cancel"]
ACTION_KINDS: tuple[ActionKind, ...] = get_args(ActionKind)
#: The command a user types to do what each action does (``{job}``: the job's id).
ACTION_COMMANDS: dict[ActionKind, str] = {
    "again": "/image again {job}",
    "file": "/image file {job}",
    "cancel": "/image cancel {job}",
}


@dataclass(frozen=True)
class Action:
    """A one-tap action offered under a message, about one stored job.

    Front ends that can (a Telegram bot account) show it as a button; a press
    comes back as an :class:`ActionPress`. It names the job only, so a press on
    an old message still works after a restart.
    """

    kind: ActionKind
    job_id: str
    #: What its button says, in the chat's language (empty: the English label);
    #: not part of what the action is.
    label: str = field(default="", compare=False)


@dataclass(frozen=True)
class ActionPress:
    """Someone pressed an :class:`Action` under a message in a chat."""

    chat_id: str
    #: The message that carries the button; replies go under it.
    message_id: int
    user_id: str
    action: Action
    from_owner: bool = False
    chat_address: str | None = None


@dataclass(frozen=True)
class ActionAnswer:
    """What the presser of an action is shown: briefly, or in a dialog when ``alert``."""

    text: str | None = None
    alert: bool = False


@dataclass(frozen=True)
class OutgoingImage:
    """An image to deliver and how."""

    image: GeneratedImage
    caption: Caption
    #: A file name with the extension of the real format (defect 6).
    filename: str
    #: Send as a document (original bytes) rather than a photo.
    as_file: bool
    #: A chat's reference to the same file uploaded before (a cache hit): the
    #: front end may send that instead of the bytes, and falls back to the bytes.
    upload_ref: str | None = None
    #: Told the chat's reference after a fresh upload, so a later cache hit can reuse it.
    remember_upload: Callable[[str], None] | None = None
    #: One-tap actions to offer under the image (front ends that cannot, ignore them).
    actions: tuple[Action, ...] = ()
    #: The same bytes, already kept on disk by the bot: a front end that writes
    #: files links to it instead of writing the image a second time.
    kept_path: Path | None = None


class ChatPort(Protocol):
    """What the core may do in a chat. Message ids are the chat's own."""

    def remember_chat(self, chat_id: str, address: str | None) -> None:
        """Learn how to reach ``chat_id`` (an :attr:`IncomingMessage.chat_address`).

        Called for each incoming message and, on a restart, for each recovered
        job before anything is sent to its chat. ``None`` teaches nothing.
        """
        ...

    async def send_text(
        self,
        chat_id: str,
        text: str,
        *,
        reply_to: int | None,
        actions: tuple[Action, ...] = (),
    ) -> int:
        """Send a new text message (offering ``actions`` under it); returns its id."""
        ...

    async def edit_text(
        self, chat_id: str, message_id: int, text: str, *, actions: tuple[Action, ...] = ()
    ) -> None:
        """Replace a message's text; the actions under it become ``actions`` (none: removed)."""
        ...

    async def delete_message(self, chat_id: str, message_id: int) -> None: ...

    async def send_image(self, chat_id: str, image: OutgoingImage, *, reply_to: int | None) -> int:
        """Deliver an image; returns the id of the message that carries it."""
        ...

    async def send_album(
        self, chat_id: str, images: list[OutgoingImage], caption: Caption, *, reply_to: int | None
    ) -> list[int]:
        """Deliver 2..10 images as one album with one caption; each image's message id.

        Images that cannot all go as photos go as a group of documents.
        """
        ...

    async def find_delivered(self, chat_id: str, *, reply_to: int, job_id: str) -> int | None:
        """After a crash: the message that already carries ``job_id``'s image, if any.

        ``job_id`` may be an album's id: its caption carries the album's tag.

        This is what makes delivery exactly-once: a job that was being sent when
        the process died is only sent again when the chat does not have it.
        """
        ...

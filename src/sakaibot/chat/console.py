"""The console front end: the chat port on a terminal, for development, demos and scripts.

Each input line is a message from ``you``, or from ``name`` when the line starts
with ``@name``, so one terminal can play several users in one chat. Output is
either readable lines or, with ``jsonl``, one JSON object per event (the event
shapes are documented in ``docs/image-generation/commands.md``).

Input is read line by line with a bound: a line longer than
:data:`MAX_LINE_BYTES` is skipped whole (in bounded memory) and answered with
a rejection, and reading goes on with the next line.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import BinaryIO, TextIO

from sakaibot.captions import Caption
from sakaibot.chat.port import ACTION_COMMANDS, Action, IncomingMessage, OutgoingImage
from sakaibot.errors import LineTooLong
from sakaibot.pipeline import JobOutcome
from sakaibot.status import action_label, failed_text

CONSOLE_CHAT_ID = "console"
DEFAULT_USER = "you"
_SENDER_RE = re.compile(r"^@(?P<name>[\w.-]{1,32})\s+(?P<text>.*)$", re.DOTALL)
#: The longest input line read (asyncio's default stream limit); longer ones are refused.
MAX_LINE_BYTES = 64 * 1024
#: How much of a refused line is echoed back, so the user sees which one it was.
_HEAD_CHARS = 60
_NEWLINE = b"\n"


@dataclass(frozen=True)
class OverlongLine:
    """An input line over the limit: only its start was kept, the rest was skipped."""

    head: str
    limit_bytes: int


def _decode(raw: bytes) -> str:
    return raw.decode("utf-8", errors="replace")


def _overlong(head: bytes, limit_bytes: int) -> OverlongLine:
    return OverlongLine(_decode(head[: _HEAD_CHARS * 4])[:_HEAD_CHARS], limit_bytes)


async def read_stream_lines(
    reader: asyncio.StreamReader, *, max_line_bytes: int = MAX_LINE_BYTES
) -> AsyncIterator[str | OverlongLine]:
    """Lines from ``reader`` (built with ``limit=max_line_bytes``); never raises for length."""
    while True:
        try:
            raw = await reader.readuntil(_NEWLINE)
        except asyncio.IncompleteReadError as exc:  # the last line has no newline
            if len(exc.partial) > max_line_bytes:
                yield _overlong(exc.partial, max_line_bytes)
            elif exc.partial:
                yield _decode(exc.partial)
            return
        except asyncio.LimitOverrunError as exc:
            # The reader keeps what it read: take it, then drop the rest of the line.
            head = await reader.readexactly(exc.consumed)
            await _skip_line(reader)
            yield _overlong(head, max_line_bytes)
            continue
        yield _decode(raw)


async def _skip_line(reader: asyncio.StreamReader) -> None:
    """Drop input up to and including the next newline, a buffer's worth at a time."""
    while True:
        try:
            await reader.readuntil(_NEWLINE)
        except asyncio.IncompleteReadError:
            return
        except asyncio.LimitOverrunError as exc:
            await reader.readexactly(exc.consumed)
            continue
        return


def read_file_line(
    stream: BinaryIO, *, max_line_bytes: int = MAX_LINE_BYTES
) -> str | OverlongLine | None:
    """The next line of a regular file (``None`` at its end), read in bounded memory."""
    raw = stream.readline(max_line_bytes + 1)
    if not raw:
        return None
    if raw.endswith(_NEWLINE) or len(raw) <= max_line_bytes:
        return _decode(raw)
    head = raw
    while raw and not raw.endswith(_NEWLINE):
        raw = stream.readline(max_line_bytes + 1)
    return _overlong(head, max_line_bytes)


def _with_actions(
    event: dict[str, object], line: str, actions: tuple[Action, ...]
) -> tuple[dict[str, object], str]:
    """The event and line with the offered actions added (unchanged when there are none)."""
    if not actions:
        return event, line
    hints = " ".join(
        f"[{a.label or action_label(a.kind)}: {ACTION_COMMANDS[a.kind].format(job=a.job_id)}]"
        for a in actions
    )
    return {**event, "actions": [a.kind for a in actions]}, f"{line}\n  {hints}"


def _write_atomically(path: Path, data: bytes, kept: Path | None = None) -> None:
    """Put ``data`` at ``path`` so that it is either absent or whole.

    When the bot already keeps the same bytes in ``kept``, ``path`` becomes a
    second name for that file (a hard link): each image is written once.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.name}.partial")
    partial.unlink(missing_ok=True)
    try:
        if kept is None:
            raise FileNotFoundError("nothing kept to link to")
        os.link(kept, partial)
    except OSError:
        # Not kept, evicted meanwhile, or another file system: write the bytes.
        partial.write_bytes(data)
    partial.replace(path)


class ConsoleChat:
    """A chat that lives on stdout; images are written to ``out_dir``."""

    def __init__(
        self,
        out: TextIO,
        *,
        out_dir: Path,
        jsonl: bool,
        echo_input: bool,
        image_path: Path | None = None,
    ) -> None:
        self._out = out
        self._out_dir = out_dir
        #: When set (``sakaibot generate``), images go to this path, its suffix
        #: replaced by the real format's.
        self._image_path = image_path
        self._jsonl = jsonl
        self._echo_input = echo_input
        self._last_message_id = 0

    def _next_id(self) -> int:
        self._last_message_id += 1
        return self._last_message_id

    def _emit(self, event: dict[str, object], line: str) -> None:
        if self._jsonl:
            self._out.write(json.dumps(event, ensure_ascii=False) + "\n")
        else:
            self._out.write(line + "\n")
        self._out.flush()

    # -- input -----------------------------------------------------------------

    def incoming(self, line: str, *, user: str = DEFAULT_USER) -> IncomingMessage | None:
        """Turn one input line from ``user`` into a message (``None`` for a blank line)."""
        text = line.rstrip("\r\n")
        if not text.strip():
            return None
        match = _SENDER_RE.match(text.strip())
        if match is not None:
            user = match.group("name")
            text = match.group("text")
        message_id = self._next_id()
        if self._jsonl:
            self._emit({"type": "in", "id": message_id, "user": user, "text": text}, "")
        elif self._echo_input:
            self._emit({}, f"{user} #{message_id}: {text}")
        return IncomingMessage(
            chat_id=CONSOLE_CHAT_ID,
            message_id=message_id,
            user_id=user,
            text=text,
            # The person at the terminal runs the bot; `@name` plays someone else.
            from_owner=user == DEFAULT_USER,
        )

    async def refuse_line(self, line: OverlongLine) -> None:
        """Answer an input line that was too long to read, as a chat would a message."""
        message_id = self._next_id()
        head = f"{line.head}…"
        if self._jsonl:
            self._emit({"type": "in", "id": message_id, "user": DEFAULT_USER, "text": head}, "")
        elif self._echo_input:
            self._emit({}, f"{DEFAULT_USER} #{message_id}: {head}")
        text = failed_text(LineTooLong(line.limit_bytes).user_message)  # as the bot's rejections
        await self.send_text(CONSOLE_CHAT_ID, text, reply_to=message_id)

    def outcome(self, outcome: JobOutcome) -> None:
        """The result event: exactly one per ``/image=`` generation command."""
        if not self._jsonl:
            return
        self._emit(
            {
                "type": "result",
                "reply_to": outcome.reply_to,
                "ok": outcome.ok,
                "job": outcome.job_id,
                "model": outcome.model,
                "error": outcome.error,
            },
            "",
        )

    # -- the chat port ---------------------------------------------------------

    def remember_chat(self, chat_id: str, address: str | None) -> None:
        """The console is always reachable: nothing to learn."""

    async def send_text(
        self,
        chat_id: str,
        text: str,
        *,
        reply_to: int | None,
        actions: tuple[Action, ...] = (),
    ) -> int:
        message_id = self._next_id()
        arrow = f" ↩ #{reply_to}" if reply_to is not None else ""
        self._emit(
            *_with_actions(
                {"type": "send", "id": message_id, "reply_to": reply_to, "text": text},
                f"bot #{message_id}{arrow}: {text}",
                actions,
            )
        )
        return message_id

    async def edit_text(
        self, chat_id: str, message_id: int, text: str, *, actions: tuple[Action, ...] = ()
    ) -> None:
        self._emit(
            *_with_actions(
                {"type": "edit", "id": message_id, "text": text},
                f"bot #{message_id} (edited): {text}",
                actions,
            )
        )

    async def delete_message(self, chat_id: str, message_id: int) -> None:
        self._emit({"type": "delete", "id": message_id}, f"bot #{message_id} (deleted)")

    async def find_delivered(self, chat_id: str, *, reply_to: int, job_id: str) -> int | None:
        # On the console an image is delivered once its file is in place; file
        # names carry the job id and are written atomically.
        if self._image_path is not None:
            return 0 if any(self._image_path.parent.glob(f"{self._image_path.stem}.*")) else None
        # An album's images carry its id too: "sakaibot-flux-<album>-2-<job>.png".
        candidates = [*self._out_dir.glob(f"*-{job_id}.*"), *self._out_dir.glob(f"*-{job_id}-*")]
        found = [p for p in candidates if not p.name.endswith(".partial")]
        return 0 if found else None

    async def send_album(
        self, chat_id: str, images: list[OutgoingImage], caption: Caption, *, reply_to: int | None
    ) -> list[int]:
        """One ``image`` event per image; the album's caption travels with the first."""
        first, *rest = images
        ids = [await self.send_image(chat_id, replace(first, caption=caption), reply_to=reply_to)]
        for image in rest:
            blank = replace(image, caption=Caption(()))
            ids.append(await self.send_image(chat_id, blank, reply_to=reply_to))
        return ids

    async def send_image(self, chat_id: str, image: OutgoingImage, *, reply_to: int | None) -> int:
        if self._image_path is not None:
            path = self._image_path.with_suffix(image.image.extension)
        else:
            path = self._out_dir / image.filename
        # Disk writes leave the event loop: a slow disk must not hold up the queues.
        await asyncio.to_thread(_write_atomically, path, image.image.data, image.kept_path)
        message_id = self._next_id()
        kind = "file" if image.as_file else "photo"
        size_kb = image.image.size_bytes / 1024
        picture = image.image
        arrow = f" ↩ #{reply_to}" if reply_to is not None else ""
        self._emit(
            *_with_actions(
                {
                    "type": "image",
                    "id": message_id,
                    "reply_to": reply_to,
                    "path": str(path),
                    "caption": image.caption.plain(),
                    "as_file": image.as_file,
                },
                f"bot #{message_id}{arrow}: [{kind} {path} · {picture.width}×{picture.height} "
                f"{picture.extension.lstrip('.').upper()} {size_kb:.0f} KB]"
                + (f"\n{image.caption.plain()}" if image.caption.parts else ""),
                image.actions,
            )
        )
        return message_id

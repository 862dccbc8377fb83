"""The console chat port: senders, readable lines and the JSON event stream."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path

import pytest

from sakaibot.captions import Caption, CaptionPart
from sakaibot.chat.console import (
    CONSOLE_CHAT_ID,
    MAX_LINE_BYTES,
    ConsoleChat,
    OverlongLine,
    read_file_line,
    read_stream_lines,
)
from sakaibot.chat.port import Action, OutgoingImage
from sakaibot.pipeline import JobOutcome
from tests.support.fakes import tiny_image


def plain(text: str) -> Caption:
    return Caption((CaptionPart(text),))


def test_at_name_sets_the_sender_and_ids_increase(tmp_path: Path) -> None:
    chat = ConsoleChat(io.StringIO(), out_dir=tmp_path, jsonl=False, echo_input=False)
    first = chat.incoming("/image=flux=a fox\n")
    second = chat.incoming("@alice   /image models")
    assert first is not None
    assert second is not None
    assert (first.user_id, first.text, first.message_id) == ("you", "/image=flux=a fox", 1)
    assert (second.user_id, second.text, second.message_id) == ("alice", "/image models", 2)
    assert chat.incoming("   \n") is None


async def test_jsonl_events_have_the_documented_shapes(tmp_path: Path) -> None:
    out = io.StringIO()
    chat = ConsoleChat(out, out_dir=tmp_path, jsonl=True, echo_input=False)
    message = chat.incoming("@bob /image=flux=x")
    assert message is not None
    status = await chat.send_text("console", "⏳ Queued", reply_to=message.message_id)
    await chat.edit_text("console", status, "🎨 Generating")
    picture = await chat.send_image(
        "console",
        OutgoingImage(tiny_image("PNG"), plain("caption"), "pic.png", as_file=False),
        reply_to=message.message_id,
    )
    await chat.delete_message("console", status)
    chat.outcome(
        JobOutcome(
            chat_id="console", reply_to=1, user_id="bob", ok=True, job_id="ab12cd", model="flux"
        )
    )
    events = [json.loads(line) for line in out.getvalue().splitlines()]
    assert events == [
        {"type": "in", "id": 1, "user": "bob", "text": "/image=flux=x"},
        {"type": "send", "id": 2, "reply_to": 1, "text": "⏳ Queued"},
        {"type": "edit", "id": 2, "text": "🎨 Generating"},
        {
            "type": "image",
            "id": picture,
            "reply_to": 1,
            "path": str(tmp_path / "pic.png"),
            "caption": "caption",
            "as_file": False,
        },
        {"type": "delete", "id": 2},
        {
            "type": "result",
            "reply_to": 1,
            "ok": True,
            "job": "ab12cd",
            "model": "flux",
            "error": None,
        },
    ]
    assert (tmp_path / "pic.png").read_bytes() == tiny_image("PNG").data


async def test_readable_mode_shows_what_a_chat_would(tmp_path: Path) -> None:
    out = io.StringIO()
    chat = ConsoleChat(out, out_dir=tmp_path, jsonl=False, echo_input=True)
    message = chat.incoming("/image=flux=x")
    assert message is not None
    await chat.send_text("console", "⏳ Queued", reply_to=1)
    await chat.send_image(
        "console", OutgoingImage(tiny_image(), plain("cap"), "f.jpg", as_file=True), reply_to=1
    )
    lines = out.getvalue().splitlines()
    assert lines[0] == "you #1: /image=flux=x"
    assert lines[1] == "bot #2 ↩ #1: ⏳ Queued"
    assert lines[2].startswith(f"bot #3 ↩ #1: [file {tmp_path / 'f.jpg'} · 8×6 JPG")


# -- reading input: any line length gets an answer, never a crash


def _fed(data: bytes) -> asyncio.StreamReader:
    reader = asyncio.StreamReader(limit=MAX_LINE_BYTES)
    reader.feed_data(data)
    reader.feed_eof()
    return reader


async def _read_all(reader: asyncio.StreamReader) -> list[str | OverlongLine]:
    async with asyncio.timeout(10):
        return [line async for line in read_stream_lines(reader)]


@pytest.mark.parametrize("length", [MAX_LINE_BYTES + 1, 3 * MAX_LINE_BYTES, 10 * MAX_LINE_BYTES])
async def test_an_overlong_piped_line_is_refused_and_the_next_lines_are_read(length: int) -> None:
    long_line = b"/image=flux=" + b"x" * length
    lines = await _read_all(_fed(long_line + b"\n/image models\n/image status"))
    assert len(lines) == 3
    refused = lines[0]
    assert isinstance(refused, OverlongLine)
    assert refused.head.startswith("/image=flux=xxx")
    assert refused.limit_bytes == MAX_LINE_BYTES
    assert lines[1:] == ["/image models\n", "/image status"]


async def test_lines_up_to_the_limit_are_read_whole() -> None:
    exact = b"y" * MAX_LINE_BYTES
    lines = await _read_all(_fed(exact + b"\n" + exact))
    assert lines == [exact.decode() + "\n", exact.decode()]


async def test_an_overlong_last_line_without_newline_is_refused() -> None:
    lines = await _read_all(_fed(b"ok\n" + b"z" * (MAX_LINE_BYTES + 5)))
    assert lines[0] == "ok\n"
    assert isinstance(lines[1], OverlongLine)


def test_an_overlong_line_in_a_file_is_refused_and_reading_goes_on() -> None:
    stream = io.BytesIO(b"a" * (5 * MAX_LINE_BYTES) + b"\n/image models\n" + b"b" * MAX_LINE_BYTES)
    first = read_file_line(stream)
    assert isinstance(first, OverlongLine)
    assert read_file_line(stream) == "/image models\n"
    assert read_file_line(stream) == "b" * MAX_LINE_BYTES
    assert read_file_line(stream) is None


async def test_a_refused_line_is_answered_in_the_chat(tmp_path: Path) -> None:
    out = io.StringIO()
    chat = ConsoleChat(out, out_dir=tmp_path, jsonl=True, echo_input=False)
    await chat.refuse_line(OverlongLine("/image=flux=xxxx", MAX_LINE_BYTES))
    events = [json.loads(line) for line in out.getvalue().splitlines()]
    assert events[0] == {"type": "in", "id": 1, "user": "you", "text": "/image=flux=xxxx…"}
    assert events[1]["type"] == "send"
    assert events[1]["reply_to"] == 1
    assert events[1]["text"] == (
        "❌ That line is longer than 64 KiB, so it was not read. "
        "Send each command on a line of its own, under 64 KiB."
    )


async def test_actions_are_a_hint_line_and_a_jsonl_field(tmp_path: Path) -> None:
    image = OutgoingImage(
        image=tiny_image(),
        caption=plain("a fox"),
        filename="sakaibot-flux-3f9a1c.jpg",
        as_file=False,
        actions=(Action("again", "3f9a1c"), Action("file", "3f9a1c")),
    )
    readable = io.StringIO()
    chat = ConsoleChat(readable, out_dir=tmp_path, jsonl=False, echo_input=False)
    await chat.send_image(CONSOLE_CHAT_ID, image, reply_to=1)
    assert readable.getvalue().splitlines()[-1] == (
        "  [🔁 Again: /image again 3f9a1c] [📄 As file: /image file 3f9a1c]"
    )
    stream = io.StringIO()
    jsonl = ConsoleChat(stream, out_dir=tmp_path, jsonl=True, echo_input=False)
    await jsonl.send_text(CONSOLE_CHAT_ID, "⏳", reply_to=1, actions=(Action("cancel", "ab"),))
    await jsonl.edit_text(CONSOLE_CHAT_ID, 1, "📤")
    sent, edited = (json.loads(line) for line in stream.getvalue().splitlines())
    assert sent["actions"] == ["cancel"]
    assert "actions" not in edited


async def test_an_image_the_bot_keeps_is_linked_not_written_again(tmp_path: Path) -> None:
    kept = tmp_path / "kept" / "abc.png"
    kept.parent.mkdir()
    kept.write_bytes(tiny_image("PNG").data)
    chat = ConsoleChat(io.StringIO(), out_dir=tmp_path / "out", jsonl=True, echo_input=False)
    await chat.send_image(
        "console",
        OutgoingImage(
            tiny_image("PNG"), plain("caption"), "pic.png", as_file=False, kept_path=kept
        ),
        reply_to=None,
    )
    written = tmp_path / "out" / "pic.png"
    assert written.read_bytes() == kept.read_bytes()
    assert written.stat().st_ino == kept.stat().st_ino  # one file, two names


async def test_an_image_no_longer_kept_is_written_from_its_bytes(tmp_path: Path) -> None:
    chat = ConsoleChat(io.StringIO(), out_dir=tmp_path, jsonl=True, echo_input=False)
    gone = tmp_path / "evicted.png"
    await chat.send_image(
        "console",
        OutgoingImage(
            tiny_image("PNG"), plain("caption"), "pic.png", as_file=False, kept_path=gone
        ),
        reply_to=None,
    )
    assert (tmp_path / "pic.png").read_bytes() == tiny_image("PNG").data

"""The console chat port: senders, readable lines and the JSON event stream."""

from __future__ import annotations

import io
import json
from pathlib import Path

from sakaibot.captions import Caption, CaptionPart
from sakaibot.chat.console import ConsoleChat
from sakaibot.chat.port import OutgoingImage
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

"""The terminal console's chat port: edits stay in place in the bar until the job ends."""

from __future__ import annotations

import io
from pathlib import Path

from sakaibot.chat.terminal import IDLE_BAR_TEXT, TerminalChat, waiting_text
from sakaibot.pipeline import JobOutcome


def outcome(reply_to: int, *, ok: bool) -> JobOutcome:
    return JobOutcome(chat_id="console", reply_to=reply_to, user_id="you", ok=ok, job_id="ab12cd")


async def test_edits_show_in_the_bar_and_a_failure_is_printed_when_its_job_ends(
    tmp_path: Path,
) -> None:
    out = io.StringIO()
    chat = TerminalChat(out, out_dir=tmp_path)
    changes: list[str] = []
    chat.on_change = lambda: changes.append(chat.bar_text())
    status = await chat.send_text("console", "⏳ Queued", reply_to=1)
    assert out.getvalue() == f"bot #{status} ↩ #1: ⏳ Queued\n"
    await chat.edit_text("console", status, "🖼 1 of 2 ready…\n🎨 Generating")
    assert chat.bar_text() == f"bot #{status} ↻ 🖼 1 of 2 ready… · 🎨 Generating"
    await chat.edit_text("console", status, "❌ The worker failed.")
    chat.outcome(outcome(1, ok=False))
    assert chat.bar_text() == IDLE_BAR_TEXT
    assert out.getvalue().endswith(f"bot #{status} (edited): ❌ The worker failed.\n")
    # An edit after the result (the final one may come later) is printed too.
    await chat.edit_text("console", status, "❌ Still failed.")
    assert out.getvalue().endswith(f"bot #{status} (edited): ❌ Still failed.\n")
    assert changes  # the prompt was asked to redraw


async def test_a_status_deleted_leaves_the_bar_silently(tmp_path: Path) -> None:
    out = io.StringIO()
    chat = TerminalChat(out, out_dir=tmp_path)
    status = await chat.send_text("console", "⏳ Queued", reply_to=1)
    await chat.edit_text("console", status, "🎨 Generating")
    printed = out.getvalue()
    await chat.delete_message("console", status)
    chat.outcome(outcome(1, ok=True))
    assert chat.bar_text() == IDLE_BAR_TEXT
    assert out.getvalue() == printed


def test_the_waiting_line_counts_jobs() -> None:
    assert waiting_text(1) == "waiting for 1 job… (Ctrl-C to stop; they resume next time)"
    assert waiting_text(2).startswith("waiting for 2 jobs…")

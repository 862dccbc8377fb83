"""``sakaibot chat --local`` on a real (pseudo-)terminal: what a person sees on the screen.

The bot runs under a pseudo-terminal (pexpect); its output is drawn on a
terminal emulator (pyte), which also answers the cursor-position requests
prompt_toolkit sends, as a real terminal does. Keys are sent as a person types
them; the tests wait for what should appear on the screen, bounded in seconds.
"""

from __future__ import annotations

import json
import os
import re
import stat
import sys
import time
from pathlib import Path

import pexpect
import pyte

import sakaibot

ROWS, COLUMNS = 40, 140
UP = "\x1b[A"
CTRL_C, CTRL_D, CTRL_U = "\x03", "\x04", "\x15"
WAITING = "waiting for 1 job… (Ctrl-C to stop; they resume next time)"


class Terminal:
    """A terminal of ``ROWS`` x ``COLUMNS`` running ``sakaibot chat``."""

    def __init__(self, out: Path, *extra: str) -> None:
        src = str(Path(sakaibot.__file__).parent.parent)
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [src, os.environ.get("PYTHONPATH")])),
            "LLM_PROVIDER": "none",
            "TERM": "xterm",
        }
        args = ["-m", "sakaibot", "--env-file", "none", "chat", "--local", "--out", str(out)]
        self.child = pexpect.spawn(
            sys.executable,
            [*args, *extra],
            env=env,
            dimensions=(ROWS, COLUMNS),
            encoding="utf-8",
            codec_errors="replace",
        )
        child = self.child

        class Screen(pyte.Screen):  # type: ignore[misc]
            def write_process_input(self, data: str) -> None:
                child.send(data)  # the terminal's answers (cursor position) go back

        self.screen = Screen(COLUMNS, ROWS)
        self.stream = pyte.Stream(self.screen)
        #: Everything the program printed, as it came (before the terminal drew it).
        self.raw = ""

    def _feed(self, within_s: float) -> None:
        chunk = self.child.read_nonblocking(65536, timeout=within_s)
        self.raw += chunk
        self.stream.feed(chunk)

    def text(self) -> str:
        return "\n".join(line.rstrip() for line in self.screen.display)

    def wait_for(self, pattern: str, *, within_s: float = 20.0) -> str:
        """The screen once ``pattern`` (a regular expression, per line) is on it."""
        deadline = time.monotonic() + within_s
        while True:
            text = self.text()
            if re.search(pattern, text, re.MULTILINE):
                return text
            left_s = deadline - time.monotonic()
            if left_s <= 0:
                raise AssertionError(f"waited {within_s:g} s for {pattern!r}; the screen:\n{text}")
            try:
                self._feed(min(left_s, 0.5))
            except pexpect.TIMEOUT:
                continue
            except pexpect.EOF:
                if not re.search(pattern, self.text(), re.MULTILINE):
                    raise AssertionError(
                        f"the program ended before {pattern!r} appeared; the screen:\n{self.text()}"
                    ) from None

    def type(self, keys: str) -> None:
        self.child.send(keys)

    def exit_status(self, *, within_s: float = 20.0) -> int | None:
        """Wait for the program to end (reading what it still prints)."""
        deadline = time.monotonic() + within_s
        while self.child.isalive():
            if time.monotonic() > deadline:
                self.child.terminate(force=True)
                raise AssertionError(f"still running after {within_s:g} s:\n{self.text()}")
            try:
                self._feed(0.5)
            except (pexpect.TIMEOUT, pexpect.EOF):
                continue
        self.child.close()
        status: int | None = self.child.exitstatus
        return status

    def close(self) -> None:
        if self.child.isalive():
            self.child.terminate(force=True)


def test_banner_prompt_album_as_history_and_waiting_at_the_end(tmp_path: Path) -> None:
    term = Terminal(tmp_path, "--worker-latency-ms", "800")
    try:
        banner = term.wait_for(r"^you>$")
        assert "worker: flux (Flux) on the development worker at 127.0.0.1:" in banner
        assert "prompt enhancement: none: prompts are used as written" in banner
        assert "Ctrl-D quits" in banner

        term.type("/image=flux=a red fox --n 2 --seed 5\r")
        screen = term.wait_for(r"^bot #\d+ ↩ #1: \[photo .*-2-[0-9a-f]{6}\.jpg")
        assert re.search(r"^bot #\d+ ↩ #1: \[photo .*-1-[0-9a-f]{6}\.jpg", screen, re.M)
        assert "1: seed 5 #" in screen
        assert "2: seed 6 #" in screen

        term.type("hello there\r")
        term.wait_for(r"^That is not a command: try /image help")
        term.type("/as alice\r")
        term.wait_for(r"^Now speaking as alice\.$")
        term.wait_for(r"^alice>$")
        # Up recalls the lines typed before, newest first.
        term.type(UP)
        term.wait_for(r"^alice> /as alice$")
        term.type(UP)
        term.wait_for(r"^alice> hello there$")
        term.type(CTRL_U + "/image=flux=a cat\r")
        term.wait_for(r"^bot #\d+ ↩ #\d+: ⏳ Queued for Flux")
        term.type(CTRL_D)
        term.wait_for(re.escape(WAITING))
        term.wait_for(r"^a cat$")  # the image's caption: the job ended
        term.wait_for(r"^Done\. Images are in ")
        assert term.exit_status() == 0
    finally:
        term.close()
    history = tmp_path / "local-data" / "console-history"
    assert stat.S_IMODE(history.stat().st_mode) == 0o600
    assert "+/as alice" in history.read_text("utf-8")
    # The album's two images and alice's cat.
    assert len(list(tmp_path.glob("sakaibot-flux-*.jpg"))) == 3


def test_history_is_kept_across_runs_and_nothing_is_waited_for_when_idle(
    tmp_path: Path,
) -> None:
    first = Terminal(tmp_path)
    try:
        first.wait_for(r"^you>$")
        first.type("/image models\r")
        first.wait_for(r"One request may ask for up to 4 images with --n")
        first.type(CTRL_D)
        screen = first.wait_for(r"^Done\.")
        assert "waiting for" not in screen
        assert first.exit_status() == 0
    finally:
        first.close()
    second = Terminal(tmp_path)
    try:
        second.wait_for(r"^you>$")
        second.type(UP)
        second.wait_for(r"^you> /image models$")
        second.type(CTRL_U + CTRL_D)
        second.wait_for(r"^Done\.")
        assert second.exit_status() == 0
    finally:
        second.close()


def test_ctrl_c_while_waiting_stops_and_the_job_resumes_next_time(tmp_path: Path) -> None:
    slow = Terminal(tmp_path, "--worker-latency-ms", "60000")
    try:
        slow.wait_for(r"^you>$")
        slow.type("/image=flux=a slow fox\r")
        slow.wait_for(r"⏳ Queued for Flux")
        slow.type(CTRL_D)
        slow.wait_for(re.escape(WAITING))
        slow.type(CTRL_C)
        screen = slow.wait_for(r"^(\^C)?Stopped: the unfinished jobs resume the next time")
        assert "Done." not in screen
        assert slow.exit_status() == 0
    finally:
        slow.close()
    assert list(tmp_path.glob("sakaibot-flux-*.jpg")) == []
    again = Terminal(tmp_path)
    try:
        again.wait_for(r"^you>$")
        again.wait_for(r"^a slow fox$")  # made and delivered after the restart
        again.type(CTRL_D)
        again.wait_for(r"^Done\.")
        assert again.exit_status() == 0
    finally:
        again.close()
    assert len(list(tmp_path.glob("sakaibot-flux-*.jpg"))) == 1


def test_jsonl_on_a_terminal_is_the_plain_event_stream(tmp_path: Path) -> None:
    term = Terminal(tmp_path, "--jsonl")
    try:
        term.type("/image=flux=a red fox\r")
        term.wait_for(r'^\{"type": "result"')
        term.type(CTRL_D)
        assert term.exit_status() == 0
    finally:
        term.close()
    lines = [line for line in term.raw.replace("\r\n", "\n").split("\n") if line]
    # The terminal echoes what is typed; everything the bot printed is JSON.
    printed = [line for line in lines if line not in {"/image=flux=a red fox", "^D"}]
    assert "\x1b" not in term.raw  # no escape sequences: no prompt, no colours
    events = [json.loads(line) for line in printed]
    kinds = [e["type"] for e in events]
    assert kinds[0] == "in"
    assert "result" in kinds
    assert "SakaiBot console" not in term.text()

"""The console on a real terminal: a prompt with line editing and history, bot output above it.

Used by ``sakaibot chat`` when both ends are a terminal; with ``--jsonl`` or
piped input the plain event stream of :mod:`sakaibot.chat.console` is all
there is, unchanged. This is the one module that imports prompt_toolkit.

- A banner names the workers and the LLM in use and says how to quit.
- The prompt names who you speak as (``you>``); ``/as NAME`` switches for the
  lines after it, ``@name text`` for one line, as on the plain console.
- Lines are edited with the usual keys; Up and Down recall earlier lines, also
  from earlier runs (a ``0600`` file in the data folder).
- Messages from the bot are printed above the prompt, never into the line
  being typed. A status message that is edited is shown in place, in the bar
  under the prompt, until its job ends; a final failure is then printed.
- At the end of input (Ctrl-D) it says how many jobs it waits for; Ctrl-C
  stops waiting, and those jobs resume the next time.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TextIO, cast

from prompt_toolkit import PromptSession
from prompt_toolkit.history import FileHistory
from prompt_toolkit.patch_stdout import StdoutProxy

from sakaibot.chat.console import DEFAULT_USER, ConsoleChat
from sakaibot.chat.port import Action, IncomingMessage
from sakaibot.errors import plural
from sakaibot.pipeline import JobOutcome
from sakaibot.private_files import make_private_dir, touch_private

#: Where the lines typed are kept for Up/Down, in the data folder.
HISTORY_FILE_NAME = "console-history"
_NAME_RE = re.compile(r"^[\w.-]{1,32}$")
_AS_COMMAND = "/as"

# -- the texts of the terminal ---------------------------------------------------


def banner_text(workers: list[str], llm: str) -> str:
    lines = ["SakaiBot console: you are chatting with the bot on this terminal."]
    lines.extend(f"  worker: {worker}" for worker in workers)
    lines.append(f"  prompt enhancement: {llm}")
    lines.append(
        "Try /image help or /image=flux=a red fox in the snow. /as NAME speaks as "
        "someone else. Ctrl-D quits (after the images on their way)."
    )
    return "\n".join(lines)


NOT_A_COMMAND_TEXT = (
    "That is not a command: try /image help, /image=flux=a red fox, or /as NAME; Ctrl-D quits."
)
BAD_NAME_TEXT = "/as needs a name of up to 32 letters, digits, '.', '_' or '-', e.g. /as alice."
IDLE_BAR_TEXT = "Ctrl-D quits · /as NAME · /image help"


def speaking_as_text(user: str) -> str:
    return f"Now speaking as {user}."


def waiting_text(jobs: int) -> str:
    return f"waiting for {plural(jobs, 'job')}… (Ctrl-C to stop; they resume next time)"


STOPPED_TEXT = "Stopped: the unfinished jobs resume the next time sakaibot chat starts here."


# -- the chat port, with edits in place --------------------------------------------


class TerminalChat(ConsoleChat):
    """The console port on a terminal: edits of live status messages stay in the bar."""

    def __init__(self, out: TextIO, *, out_dir: Path) -> None:
        super().__init__(out, out_dir=out_dir, jsonl=False, echo_input=False)
        #: The status messages edited so far, by id, and the command each answers.
        self._live: dict[int, str] = {}
        self._answers: dict[int, int] = {}
        #: Commands whose result came: their messages' later edits are printed.
        self._ended: set[int] = set()
        #: Called when the bar's text changed (redraws the prompt).
        self.on_change: Callable[[], None] = lambda: None

    def bar_text(self) -> str:
        if not self._live:
            return IDLE_BAR_TEXT
        return "\n".join(
            f"bot #{message_id} ↻ {text.replace(chr(10), ' · ')}"
            for message_id, text in self._live.items()
        )

    async def send_text(
        self,
        chat_id: str,
        text: str,
        *,
        reply_to: int | None,
        actions: tuple[Action, ...] = (),
    ) -> int:
        message_id = await super().send_text(chat_id, text, reply_to=reply_to, actions=actions)
        if reply_to is not None:
            self._answers[message_id] = reply_to
        return message_id

    async def edit_text(
        self, chat_id: str, message_id: int, text: str, *, actions: tuple[Action, ...] = ()
    ) -> None:
        if self._answers.get(message_id) in self._ended:
            await super().edit_text(chat_id, message_id, text, actions=actions)
            return
        # The bar above the prompt is one line per status: the hint of its
        # actions was printed with the status when it was sent.
        self._live[message_id] = text
        self.on_change()

    async def delete_message(self, chat_id: str, message_id: int) -> None:
        # The image (or the reply) that follows says it all.
        self._answers.pop(message_id, None)
        if self._live.pop(message_id, None) is not None:
            self.on_change()

    def outcome(self, outcome: JobOutcome) -> None:
        self._ended.add(outcome.reply_to)
        for message_id in [m for m, c in self._answers.items() if c == outcome.reply_to]:
            text = self._live.pop(message_id, None)
            if text is not None and not outcome.ok:
                # The final word of a failed job is kept on the screen.
                self._emit({}, f"bot #{message_id} (edited): {text}")
        self.on_change()


# -- the prompt loop -----------------------------------------------------------------


class Terminal:
    """Reads lines at a prompt until Ctrl-D, hands them to the bot, then waits for its jobs."""

    def __init__(
        self,
        out: TextIO,
        *,
        out_dir: Path,
        data_dir: Path,
        handle: Callable[[IncomingMessage], Awaitable[bool]],
    ) -> None:
        #: The terminal itself, for what comes before the prompt (the banner).
        self._plain = out
        #: Writes above the prompt while it is shown; plainly once it is gone.
        self.out = StdoutProxy(raw=True)
        self.chat = TerminalChat(cast(TextIO, self.out), out_dir=out_dir)
        self._handle = handle
        self._history_path = data_dir / HISTORY_FILE_NAME
        self.user = DEFAULT_USER

    def _history(self) -> FileHistory:
        make_private_dir(self._history_path.parent)
        touch_private(self._history_path)  # 0600 before the first line is written
        return FileHistory(str(self._history_path))

    def say(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()

    async def read_until_end(self, banner: str) -> None:
        """The conversation: one line at a time, until Ctrl-D."""
        session: PromptSession[str] = PromptSession(
            history=self._history(), bottom_toolbar=self.chat.bar_text
        )
        self.chat.on_change = session.app.invalidate
        self._plain.write(banner + "\n")
        self._plain.flush()
        while True:
            try:
                line = await session.prompt_async(lambda: f"{self.user}> ")
            except KeyboardInterrupt:
                continue  # Ctrl-C clears the line, as in a shell
            except EOFError:
                break
            await self._line(line)
        self.chat.on_change = lambda: None

    async def _line(self, line: str) -> None:
        text = line.strip()
        if not text:
            return
        if text == _AS_COMMAND or text.startswith(_AS_COMMAND + " "):
            name = text[len(_AS_COMMAND) :].strip()
            if not _NAME_RE.match(name):
                self.say(BAD_NAME_TEXT)
                return
            self.user = name
            self.say(speaking_as_text(name))
            return
        message = self.chat.incoming(text, user=self.user)
        if message is not None and not await self._handle(message):
            self.say(NOT_A_COMMAND_TEXT)

    async def wait_for_jobs(self, pending: int, drain: Callable[[], Awaitable[None]]) -> bool:
        """Say how many jobs are waited for and wait; ``False`` when Ctrl-C stopped it."""
        if pending:
            self.say(waiting_text(pending))
        work = asyncio.ensure_future(drain())
        loop = asyncio.get_running_loop()
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signal.SIGINT, work.cancel)
        try:
            await work
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise  # this task itself is being stopped, not by Ctrl-C
            self.say(STOPPED_TEXT)
            return False
        finally:
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(signal.SIGINT)
        return True

    def close(self) -> None:
        self.out.close()

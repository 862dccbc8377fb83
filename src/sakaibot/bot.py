"""The image feature as a front end sees it: one message in, replies and jobs out.

:class:`ImageBot` parses the message and hands it on: a new image to
:class:`~sakaibot.admission.Admission`, any other subcommand to its handler in
:class:`~sakaibot.subcommands.Subcommands`. A refusal from either is answered
here, in one way (and, past the rejection throttle, not at all).

A one-tap action (a button under an image or a status) is the typed command it
stands for (``/image again <job>``, ``/image file <job>``, ``/image cancel
<job>``), run through the same handlers and so the same admission, for the
job's owner only; its answer goes back to the presser, not into the chat.
"""

from __future__ import annotations

import logging

from sakaibot.admission import Admission
from sakaibot.chat.port import (
    ACTION_COMMANDS,
    ActionAnswer,
    ActionKind,
    ActionPress,
    ChatPort,
    IncomingMessage,
)
from sakaibot.commands import (
    DEFAULT_MAX_PER_REQUEST,
    AgainCommand,
    CancelCommand,
    Command,
    ImageRequest,
    ResendCommand,
    is_generation_command,
    parse_command,
)
from sakaibot.errors import (
    ChatError,
    NotYourButton,
    RequestRejected,
    SlowDown,
    StoreUnavailable,
    UnknownJob,
)
from sakaibot.i18n import Languages
from sakaibot.limits import RejectionThrottle, RejectionVerdict
from sakaibot.models import ModelRegistry
from sakaibot.pipeline import JobOutcome, OutcomeListener
from sakaibot.status import action_done_text, failed_text
from sakaibot.subcommands import Subcommands

logger = logging.getLogger(__name__)


def _action_command(kind: ActionKind, job_id: str) -> tuple[str, Command]:
    """The typed command an action stands for, and how it would be typed."""
    typed = ACTION_COMMANDS[kind].format(job=job_id)
    if kind == "again":
        return typed, AgainCommand(job_id)
    if kind == "file":
        return typed, ResendCommand(job_id, as_file=True)
    return typed, CancelCommand(job_id)


def _model_named_in(text: str) -> str | None:
    """The model a generation command names, as typed (lower-cased), for its result."""
    _, _, rest = text.partition("=")
    name = rest.partition("=")[0].strip().lower()
    return name or None


class ImageBot:
    """Turns chat messages into replies and queued jobs; knows no front end."""

    def __init__(
        self,
        *,
        chat: ChatPort,
        registry: ModelRegistry,
        max_prompt_chars: int,
        max_per_request: int = DEFAULT_MAX_PER_REQUEST,
        admission: Admission,
        subcommands: Subcommands,
        rejections: RejectionThrottle,
        on_outcome: OutcomeListener,
        languages: Languages | None = None,
    ) -> None:
        self._chat = chat
        self._registry = registry
        self._max_prompt_chars = max_prompt_chars
        #: ``--n``: how many images one request may ask for.
        self._max_per_request = max_per_request
        self._admission = admission
        self._subcommands = subcommands
        #: How many refusals a user hears before silence.
        self._rejections = rejections
        self._on_outcome = on_outcome
        #: Each chat's language; English alone when none is given (tests of one language).
        self._languages = languages or Languages("en", languages=("en",))

    async def handle(self, message: IncomingMessage) -> bool:
        """Act on ``message``; ``False`` when it was not an ``/image`` command."""
        # Every reply and job of this message goes to its chat: teach the chat how.
        self._chat.remember_chat(message.chat_id, message.chat_address)
        try:
            command = parse_command(
                message.text,
                self._registry,
                max_prompt_chars=self._max_prompt_chars,
                max_per_request=self._max_per_request,
            )
            if command is None:
                return False
            answer = await self._run(message, command)
            if answer is not None:
                await self._reply(message, answer)
        except (RequestRejected, StoreUnavailable) as rejection:
            await self._reject(message, rejection)
        return True

    async def handle_action(self, press: ActionPress) -> ActionAnswer:
        """Act on a pressed action; what the presser is shown.

        Only the job's owner may use its actions: anyone else hears so and
        nothing changes. The job is read from the store, so a press on a
        message sent before a restart works the same.
        """
        self._chat.remember_chat(press.chat_id, press.chat_address)
        action = press.action
        text, command = _action_command(action.kind, action.job_id)
        message = IncomingMessage(
            chat_id=press.chat_id,
            message_id=press.message_id,
            user_id=press.user_id,
            text=text,
            from_owner=press.from_owner,
            chat_address=press.chat_address,
        )
        # Told in the language of the chat the button is in, where the presser reads it.
        texts = self._languages.for_chat(press.chat_id)
        try:
            record = await self._subcommands.stored_job(action.job_id)
            if record is None:
                raise UnknownJob(action.job_id)  # forgotten (HISTORY_RETENTION_DAYS)
            if record.user_id != press.user_id:
                raise NotYourButton()
            answer = await self._run(message, command)
        except NotYourButton as notice:
            return ActionAnswer(notice.message_in(texts))
        except (RequestRejected, StoreUnavailable) as rejection:
            # A refusal is read in a dialog: a brief notice would vanish unread.
            return ActionAnswer(rejection.message_in(texts), alert=True)
        return ActionAnswer(answer or action_done_text(action.kind, texts))

    async def _run(self, message: IncomingMessage, command: Command) -> str | None:
        """Admit a new image or run a subcommand; the reply, if any (raises a refusal)."""
        match command:
            case ImageRequest():
                await self._admission.admit(message, command)
                return None
            case _:
                return await self._subcommands.answer(message, command)

    async def _reject(
        self, message: IncomingMessage, rejection: RequestRejected | StoreUnavailable
    ) -> None:
        texts = self._languages.for_chat(message.chat_id)
        text = rejection.message_in(texts)
        verdict = RejectionVerdict.REPLY
        if not message.from_owner:
            verdict = self._rejections.verdict(message.user_id)
        if verdict is RejectionVerdict.REPLY:
            await self._reply(message, text if rejection.kind == "usage" else failed_text(text))
        elif verdict is RejectionVerdict.SLOW_DOWN:
            silent_for_s = self._rejections.policy.window_s
            logger.info(
                "user %s keeps sending refused commands: not answered for %.0f s",
                message.user_id,
                silent_for_s,
            )
            await self._reply(message, f"✋ {SlowDown(silent_for_s).message_in(texts)}")
        if is_generation_command(message.text):
            self._on_outcome(
                JobOutcome(
                    chat_id=message.chat_id,
                    reply_to=message.message_id,
                    user_id=message.user_id,
                    ok=False,
                    model=_model_named_in(message.text),
                    error_kind=rejection.kind,
                    error=text,
                )
            )

    async def _reply(self, message: IncomingMessage, text: str) -> None:
        try:
            await self._chat.send_text(message.chat_id, text, reply_to=message.message_id)
        except ChatError:
            logger.warning("chat %s: reply failed", message.chat_id, exc_info=True)

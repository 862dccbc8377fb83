"""The image feature as a front end sees it: one message in, replies and jobs out.

:class:`ImageBot` parses the message and hands it on: a new image to
:class:`~sakaibot.admission.Admission`, any other subcommand to its handler in
:class:`~sakaibot.subcommands.Subcommands`. A refusal from either is answered
here, in one way (and, past the rejection throttle, not at all).
"""

from __future__ import annotations

import logging

from sakaibot.admission import Admission
from sakaibot.chat.port import ChatPort, IncomingMessage
from sakaibot.commands import (
    DEFAULT_MAX_PER_REQUEST,
    ImageRequest,
    is_generation_command,
    parse_command,
)
from sakaibot.errors import ChatError, RequestRejected, SlowDown, StoreUnavailable
from sakaibot.limits import RejectionThrottle, RejectionVerdict
from sakaibot.models import ModelRegistry
from sakaibot.pipeline import JobOutcome, OutcomeListener
from sakaibot.status import failed_text
from sakaibot.subcommands import Subcommands

logger = logging.getLogger(__name__)


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
            match command:
                case None:
                    return False
                case ImageRequest():
                    await self._admission.admit(message, command)
                case _:
                    answer = await self._subcommands.answer(message, command)
                    if answer is not None:
                        await self._reply(message, answer)
        except (RequestRejected, StoreUnavailable) as rejection:
            await self._reject(message, rejection)
        return True

    async def _reject(
        self, message: IncomingMessage, rejection: RequestRejected | StoreUnavailable
    ) -> None:
        text = rejection.user_message
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
            await self._reply(message, f"✋ {SlowDown(silent_for_s).user_message}")
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

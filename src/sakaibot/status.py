"""The status scheduler: one live status message per job, paced per chat, never blocking.

Every front end uses this same scheduler, so the console shows exactly what
Telegram would. Rules (``docs/image-generation/architecture.md``, "The status scheduler"):

- :meth:`StatusScheduler.show` and :meth:`~StatusScheduler.finish` only record
  what is wanted and return at once: a queue worker never waits on a chat.
- Per chat, one lane sends the operations in order: at most one edit per edit
  interval, and new status messages (which acknowledge new commands, and go
  first) at most one per second. Only the newest wanted text of a message is
  kept (coalescing); a text equal to what the chat already shows is never re-sent.
- Final operations (removing the status once the image is out, or turning it
  into the error) skip the pacing interval: the result is never delayed by it.
- A text may be given as a function: it is rendered only when it is sent, so
  the positions of a deep queue cost nothing until a chat is due an edit.
- A chat's lane is removed once it has nothing to show and is not muted, so
  memory does not grow with the number of chats ever served.
- A flood wait mutes the chat's lane for its duration; intermediate texts are
  dropped by coalescing and the final operation still goes out afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial

from sakaibot.chat.port import Action, ActionKind, ChatPort
from sakaibot.errors import ChatError, FloodWait, MessageNotModified, format_wait
from sakaibot.i18n import ENGLISH, N_, Texts
from sakaibot.jobs import Album, Job, JobState
from sakaibot.queues import QueuePlace

logger = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[None]]
#: A status text, or how to write it when it is sent.
Text = str | Callable[[], str]

#: Spacing of new status messages in one chat, about Telegram's one message per
#: second per chat; edits of existing ones follow the (longer) edit interval.
SEND_GAP_S = 1.0
#: A sleeping lane is only woken for a change that may go this much sooner.
_WAKE_MARGIN_S = 0.05


# -- the texts of the status flow ----------------------------------------------


def queued_text(model_label: str, place: QueuePlace, texts: Texts = ENGLISH) -> str:
    eta = format_wait(place.eta_s, texts)
    if place.position == 1:
        return texts.gettext(
            "⏳ Queued for {model}: next in line, ready in about {eta}.", model=model_label, eta=eta
        )
    return texts.gettext(
        "⏳ Queued for {model}: position {position}, ready in about {eta}.",
        model=model_label,
        position=place.position,
        eta=eta,
    )


def enhancing_text(texts: Texts = ENGLISH) -> str:
    return texts.gettext("✨ Improving your prompt…")


def generating_text(model_label: str, texts: Texts = ENGLISH) -> str:
    return texts.gettext("🎨 Generating with {model}…", model=model_label)


def sending_text(texts: Texts = ENGLISH) -> str:
    return texts.gettext("📤 Sending…")


def paused_text(model_label: str, retry_after_s: float, texts: Texts = ENGLISH) -> str:
    if retry_after_s > 0:
        return texts.gettext(
            "⏸ The {model} worker keeps failing, so {model} is paused; it is "
            "tried again in about {wait}. Your image stays in line and will be made when "
            "it is back.",
            model=model_label,
            wait=format_wait(retry_after_s, texts),
        )
    return texts.gettext(
        "⏸ The {model} worker keeps failing, so {model} is paused; it is "
        "tried again soon. Your image stays in line and will be made when it is back.",
        model=model_label,
    )


def restarting_text(texts: Texts = ENGLISH) -> str:
    return texts.gettext(
        "⏸ SakaiBot is restarting. Your image is kept and will be made as soon as it is back."
    )


def failed_text(user_message: str) -> str:
    return f"❌ {user_message}"


def album_progress_text(made: int, size: int, failed: int, texts: Texts = ENGLISH) -> str:
    if not failed:
        return texts.gettext("🖼 {made} of {size} ready…", made=made, size=size)
    return texts.gettext(
        "🖼 {made} of {size} ready… ({failed} could not be made)",
        made=made,
        size=size,
        failed=failed,
    )


def album_failed_text(size: int, reasons: str, texts: Texts = ENGLISH) -> str:
    return texts.gettext(
        "None of the {size} images could be made: {reasons}.", size=size, reasons=reasons
    )


def status_text(job: Job, text: Text | None = None) -> Text:
    """What ``job``'s status message says: ``text``, or its album's progress with
    the step of the first image still on its way (one message per request).

    An album's text is rendered when it is sent, from the album as it is then
    (an image's step given as a function is rendered then too).
    """
    album = job.album
    if album is None:
        return text or ""
    if text is not None and job.album_index not in album.ended:
        album.statuses[job.album_index] = text
    return partial(album_text, album)


def album_text(album: Album) -> str:
    """An album's status: "2 of 4 ready…" and the step of its first image on its way."""
    head = album_progress_text(album.made, album.size, album.failed, album.texts)
    waiting = [index for index in range(album.size) if index not in album.ended]
    current = album.statuses.get(waiting[0]) if waiting else None
    if current is None:
        return head
    return f"{head}\n{current() if callable(current) else current}"


# -- the texts of one-tap actions and per-chat defaults --------------------------

#: The label of each one-tap action (a bot account's button).
ACTION_LABELS: dict[ActionKind, str] = {
    "again": N_("🔁 Again"),
    "file": N_("📄 As file"),
    "cancel": N_("❌ Cancel"),
}
#: The short answer to a press that did what it says (shown briefly by the chat).
ACTION_DONE: dict[ActionKind, str] = {
    "again": N_("🔁 Making another one."),
    "file": N_("📄 Sent as a file."),
    "cancel": N_("🚫 Cancelled."),
}


def action_label(kind: ActionKind, texts: Texts = ENGLISH) -> str:
    """What the button of ``kind`` says."""
    return texts.gettext(ACTION_LABELS[kind])


def action_done_text(kind: ActionKind, texts: Texts = ENGLISH) -> str:
    """The answer to a press of ``kind`` that did what it says."""
    return texts.gettext(ACTION_DONE[kind])


def defaults_text(flags: list[str], skipped: dict[str, list[str]], texts: Texts = ENGLISH) -> str:
    """``/image set``: the chat's defaults (as flags), and which models skip which."""
    _ = texts.gettext
    if not flags:
        return _(
            "This chat has no default flags. Set one with /image set <flag> <value>, "
            "e.g. /image set ar 16:9 or /image set raw on."
        )
    lines = [_("Defaults in this chat: {flags}", flags=" ".join(flags))]
    lines.extend(
        _(
            "{flag} is skipped for {models} (not a flag it takes).",
            flag=flag,
            models=", ".join(models),
        )
        for flag, models in skipped.items()
    )
    lines.append(
        _(
            "A request's own flags win. Change one with /image set <flag> <value>, clear one "
            "with /image set <flag> off, all with /image set reset."
        )
    )
    return "\n".join(lines)


def default_set_text(flag: str, skipped_by: list[str], texts: Texts = ENGLISH) -> str:
    """The answer to ``/image set <flag> <value>``."""
    _ = texts.gettext
    if skipped_by:
        return _(
            "✅ Every image in this chat now gets {flag} unless the request says otherwise. "
            "{models} does not take {name}: skipped there. /image set shows all defaults.",
            flag=flag,
            models=", ".join(skipped_by),
            name=flag.split()[0],
        )
    return _(
        "✅ Every image in this chat now gets {flag} unless the request says otherwise. "
        "/image set shows all defaults.",
        flag=flag,
    )


def default_cleared_text(flag: str, texts: Texts = ENGLISH) -> str:
    return texts.gettext("✅ This chat no longer has a default for --{flag}.", flag=flag)


def defaults_reset_text(count: int, texts: Texts = ENGLISH) -> str:
    if count == 0:
        return texts.gettext("This chat had no defaults to clear.")
    return texts.gettext("🧹 This chat's defaults are cleared ({count} removed).", count=count)


def cancel_actions(job_id: str, texts: Texts = ENGLISH) -> tuple[Action, ...]:
    """What a status offers while its job waits or is being made: ❌ cancel."""
    return (Action("cancel", job_id, action_label("cancel", texts)),)


def status_actions(job: Job) -> tuple[Action, ...]:
    """What ``job``'s status offers while it waits or is being made.

    An album's one status offers none: a button cancels one job, and the
    album's images are cancelled one by one (``/image cancel <id>``).
    """
    return () if job.album is not None else cancel_actions(job.id, job.texts)


def show_place(status: StatusScheduler, job: Job, place: QueuePlace) -> None:
    """The queues' position listener: a waiting job's status says where it stands.

    Nothing is said before the job is safe in the store: a user is only told
    "queued" about a job that survives a restart.
    """
    if job.state is JobState.QUEUED and job.stored:
        # While its prompt is being improved ahead, that is what the job is doing.
        text: Text = (
            enhancing_text(job.texts)
            if job.improving
            else partial(queued_text, job.model.display_name, place, job.texts)
        )
        status.show(
            job.status_key,
            chat_id=job.chat_id,
            reply_to=job.reply_to,
            text=status_text(job, text),
            actions=status_actions(job),
        )


# -- the scheduler --------------------------------------------------------------


@dataclass
class _StatusMessage:
    reply_to: int
    message_id: int | None = None
    shown_text: str | None = None
    wanted_text: Text | None = None
    #: The actions offered under the message (a final text offers none).
    shown_actions: tuple[Action, ...] = ()
    wanted_actions: tuple[Action, ...] = ()
    #: Set by finish(): None removes the message, a text replaces it for good.
    finishing: bool = False
    final_text: str | None = None


@dataclass
class _Lane:
    """Everything one chat has pending, worked by one task at a time."""

    chat_id: str
    statuses: dict[str, _StatusMessage] = field(default_factory=dict)
    #: Keys with a paced change pending, in the order they became pending.
    paced: dict[str, None] = field(default_factory=dict)
    #: Keys whose final operation is pending.
    urgent: dict[str, None] = field(default_factory=dict)
    next_send_at_s: float = 0.0
    next_edit_at_s: float = 0.0
    #: Until when the lane's task sleeps (0 when it is not sleeping).
    paused_until_s: float = 0.0
    muted_until_s: float = 0.0
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None


@dataclass
class StatusCounters:
    """How many operations reached the chat (for benchmarks and tests)."""

    sends: int = 0
    edits: int = 0
    deletes: int = 0
    flood_waits: int = 0


class StatusScheduler:
    """Coalescing, per-chat paced status messages."""

    def __init__(
        self,
        chat: ChatPort,
        *,
        edit_interval_s: Callable[[str], float],
        clock: Callable[[], float],
        sleep: Sleep = asyncio.sleep,
        on_message: Callable[[str, int], None] | None = None,
    ) -> None:
        self._chat = chat
        #: Told the id of each new status message (the store keeps it for restarts).
        self._on_message = on_message
        self._interval_s = edit_interval_s
        self._clock = clock
        self._sleep = sleep
        self._lanes: dict[str, _Lane] = {}
        self._index: dict[str, _Lane] = {}
        self.counters = StatusCounters()

    # -- what callers use; none of these wait on the chat ----------------------

    def show(
        self,
        key: str,
        *,
        chat_id: str,
        reply_to: int,
        text: Text,
        actions: tuple[Action, ...] = (),
    ) -> None:
        """Make the status message of ``key`` say ``text`` (offering ``actions``), soon;
        a text given as a function is rendered only when sent."""
        lane = self._lanes.get(chat_id)
        if lane is None:
            lane = self._lanes[chat_id] = _Lane(chat_id)
        status = lane.statuses.get(key)
        if status is None:
            status = lane.statuses[key] = _StatusMessage(reply_to=reply_to)
            self._index[key] = lane
        if status.finishing:
            return
        status.wanted_text = text
        status.wanted_actions = actions
        if callable(text) or text != status.shown_text or actions != status.shown_actions:
            lane.paced.setdefault(key, None)
        else:
            lane.paced.pop(key, None)
        # A paused lane is woken only when this change may go before the time it
        # sleeps until: a new message whose send slot comes sooner. Another edit
        # waits for the same slot anyway, and waking for nothing costs CPU.
        self._kick(
            lane,
            wake=status.message_id is None
            and lane.next_send_at_s < lane.paused_until_s - _WAKE_MARGIN_S,
        )

    def adopt(
        self, key: str, *, chat_id: str, reply_to: int, message_id: int | None = None
    ) -> None:
        """Register ``key``'s status without showing anything yet: a message sent
        before a restart is taken over (edited, not repeated)."""
        lane = self._lanes.get(chat_id)
        if lane is None:
            lane = self._lanes[chat_id] = _Lane(chat_id)
        lane.statuses[key] = _StatusMessage(reply_to=reply_to, message_id=message_id)
        self._index[key] = lane

    def finish(self, key: str, *, final_text: str | None = None) -> None:
        """End ``key``'s status: remove it (``None``) or replace it with ``final_text``.

        Goes out without waiting for the pacing interval.
        """
        lane = self._index.get(key)
        if lane is None:
            if final_text is None:
                return
            raise KeyError(f"no status for {key}; call show() first")
        status = lane.statuses[key]
        lane.paced.pop(key, None)
        if final_text is None and status.message_id is None:
            # Never shown, nothing to remove: the chat needs no operation at all.
            del lane.statuses[key]
            del self._index[key]
            self._drop_if_idle(lane)
            return
        status.finishing = True
        status.final_text = final_text
        lane.urgent.setdefault(key, None)
        self._kick(lane)

    def message_id(self, key: str) -> int | None:
        """The chat's id of ``key``'s status message, once it has been sent."""
        lane = self._index.get(key)
        return None if lane is None else lane.statuses[key].message_id

    def key_for_message(self, chat_id: str, message_id: int) -> str | None:
        """Which key a status message belongs to (for ``/image cancel`` as a reply)."""
        lane = self._lanes.get(chat_id)
        if lane is None:
            return None
        for key, status in lane.statuses.items():
            if status.message_id == message_id:
                return key
        return None

    def pending(self) -> int:
        """Status messages not yet finished and flushed."""
        return len(self._index)

    async def drain(self) -> None:
        """Wait until every lane has nothing left to send."""
        while True:
            tasks = [lane.task for lane in self._lanes.values() if lane.task is not None]
            if not tasks:
                return
            await asyncio.gather(*tasks)

    async def aclose(self) -> None:
        """Stop every lane now (shutdown after drain, or on a hard stop)."""
        tasks = [lane.task for lane in self._lanes.values() if lane.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # -- the lanes -------------------------------------------------------------

    def _kick(self, lane: _Lane, *, wake: bool = True) -> None:
        if wake:
            lane.wake.set()
        if lane.task is None or lane.task.done():
            lane.task = asyncio.create_task(self._run_lane(lane), name=f"status-{lane.chat_id}")

    async def _run_lane(self, lane: _Lane) -> None:
        try:
            while lane.urgent or lane.paced:
                now_s = self._clock()
                if lane.muted_until_s > now_s:
                    await self._pause(lane, lane.muted_until_s - now_s)
                    continue
                if lane.urgent:
                    key = next(iter(lane.urgent))
                    await self._final(lane, key)
                    continue
                key, ready_at_s = self._next_paced(lane)
                if ready_at_s > now_s:
                    await self._pause(lane, ready_at_s - now_s)
                    continue
                await self._paced(lane, key)
        finally:
            lane.task = None
            self._drop_if_idle(lane)

    def _drop_if_idle(self, lane: _Lane) -> None:
        # Pacing is forgotten with the lane: the next status in this chat is a
        # new message answering a new command, which goes at once anyway.
        idle = not lane.statuses and lane.task is None and lane.muted_until_s <= self._clock()
        if idle and self._lanes.get(lane.chat_id) is lane:
            del self._lanes[lane.chat_id]

    def lane_count(self) -> int:
        """Chats with a lane (for tests and benchmarks of bounded memory)."""
        return len(self._lanes)

    @staticmethod
    def _next_paced(lane: _Lane) -> tuple[str, float]:
        """The paced operation to do next, and when it may go.

        A status not shown at all yet goes first: acknowledging a new command
        matters more than moving an existing status along. New messages are
        spaced by :data:`SEND_GAP_S`; edits by the chat's edit interval.
        """
        first_edit: str | None = None
        for key in lane.paced:
            if lane.statuses[key].message_id is None:
                return key, lane.next_send_at_s
            if first_edit is None:
                first_edit = key
        assert first_edit is not None
        return first_edit, lane.next_edit_at_s

    async def _pause(self, lane: _Lane, delay_s: float) -> None:
        """Sleep ``delay_s``, or less if an urgent operation arrives meanwhile."""
        lane.wake.clear()
        if lane.urgent and lane.muted_until_s <= self._clock():
            return
        sleeper = asyncio.ensure_future(self._sleep(delay_s))
        waker = asyncio.ensure_future(lane.wake.wait())
        lane.paused_until_s = self._clock() + delay_s
        try:
            await asyncio.wait({sleeper, waker}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            lane.paused_until_s = 0.0
            for pending in (sleeper, waker):
                if not pending.done():
                    pending.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await pending

    async def _paced(self, lane: _Lane, key: str) -> None:
        status = lane.statuses[key]
        wanted = status.wanted_text
        text = wanted() if callable(wanted) else wanted
        actions = status.wanted_actions
        lane.paced.pop(key, None)
        if text is None or (text == status.shown_text and actions == status.shown_actions):
            return
        sent_new = status.message_id is None
        try:
            if status.message_id is None:
                status.message_id = await self._chat.send_text(
                    lane.chat_id, text, reply_to=status.reply_to, actions=actions
                )
                self.counters.sends += 1
                if self._on_message is not None:
                    self._on_message(key, status.message_id)
            else:
                await self._chat.edit_text(lane.chat_id, status.message_id, text, actions=actions)
                self.counters.edits += 1
            status.shown_text, status.shown_actions = text, actions
        except MessageNotModified:
            status.shown_text, status.shown_actions = text, actions
        except FloodWait as exc:
            self._mute(lane, exc)
            if not status.finishing:
                lane.paced.setdefault(key, None)
        except ChatError:
            # A status that cannot be shown is not worth failing a job for;
            # the final result goes out on its own.
            logger.warning("chat %s: status update failed", lane.chat_id, exc_info=True)
        now_s = self._clock()
        if sent_new:
            lane.next_send_at_s = now_s + SEND_GAP_S
            # Nothing goes to a chat twice within the send gap, edits included.
            lane.next_edit_at_s = max(lane.next_edit_at_s, now_s + SEND_GAP_S)
        else:
            lane.next_edit_at_s = now_s + self._interval_s(lane.chat_id)

    async def _final(self, lane: _Lane, key: str) -> None:
        status = lane.statuses[key]
        try:
            if status.final_text is None:
                if status.message_id is not None:
                    await self._chat.delete_message(lane.chat_id, status.message_id)
                    self.counters.deletes += 1
            elif status.message_id is None:
                status.message_id = await self._chat.send_text(
                    lane.chat_id, status.final_text, reply_to=status.reply_to
                )
                self.counters.sends += 1
            elif status.final_text != status.shown_text or status.shown_actions:
                # A final text offers no actions: a cancel button would outlive its job.
                await self._edit_or_resend(lane, status, status.final_text)
        except FloodWait as exc:
            self._mute(lane, exc)
            return  # stays urgent: it goes out when the wait is over
        except ChatError:
            logger.warning("chat %s: final status failed", lane.chat_id, exc_info=True)
        lane.urgent.pop(key, None)
        del lane.statuses[key]
        del self._index[key]

    async def _edit_or_resend(self, lane: _Lane, status: _StatusMessage, text: str) -> None:
        assert status.message_id is not None
        try:
            await self._chat.edit_text(lane.chat_id, status.message_id, text)
            self.counters.edits += 1
        except MessageNotModified:
            pass
        except FloodWait:
            raise
        except ChatError:
            # The status message may have been deleted by hand: say it anew.
            await self._chat.send_text(lane.chat_id, text, reply_to=status.reply_to)
            self.counters.sends += 1
        status.shown_text = text

    def _mute(self, lane: _Lane, exc: FloodWait) -> None:
        self.counters.flood_waits += 1
        lane.muted_until_s = max(lane.muted_until_s, self._clock() + exc.retry_after_s)
        logger.warning(
            "chat %s: flood wait of %.0f s; status edits muted", lane.chat_id, exc.retry_after_s
        )

"""The status scheduler: pacing, coalescing, finals that skip pacing, flood waits."""

from __future__ import annotations

import asyncio
import itertools
from functools import partial

from sakaibot.chat.port import Action
from sakaibot.errors import ChatError, FloodWait, MessageNotModified
from sakaibot.status import SEND_GAP_S, StatusScheduler
from tests.support.fakes import FakeClock, RecordingChat
from tests.support.waiting import until

INTERVAL_S = 3.0


def make(chat: RecordingChat, clock: FakeClock) -> StatusScheduler:
    return StatusScheduler(
        chat, edit_interval_s=lambda _chat: INTERVAL_S, clock=clock, sleep=clock.sleep
    )


async def settle(status: StatusScheduler) -> None:
    await asyncio.wait_for(status.drain(), timeout=5)


async def test_first_text_is_sent_at_once_then_edits_are_paced_and_coalesced() -> None:
    clock = FakeClock()
    chat = RecordingChat(clock=clock)
    status = make(chat, clock)
    status.show("j1", chat_id="c", reply_to=7, text="queued 3")
    await settle(status)
    status.show("j1", chat_id="c", reply_to=7, text="queued 2")
    status.show("j1", chat_id="c", reply_to=7, text="queued 1")
    status.show("j1", chat_id="c", reply_to=7, text="generating")
    await settle(status)
    assert [(e.kind, e.text) for e in chat.events] == [
        ("send", "queued 3"),
        ("edit", "generating"),  # the two stale texts were never sent
    ]
    assert chat.events[0].reply_to == 7
    assert chat.events[1].at_s - chat.events[0].at_s >= SEND_GAP_S


async def test_edits_in_a_chat_are_one_interval_apart() -> None:
    clock = FakeClock()
    chat = RecordingChat(clock=clock)
    status = make(chat, clock)
    status.show("j1", chat_id="c", reply_to=1, text="one")
    await settle(status)
    for text in ("two", "three", "four"):
        status.show("j1", chat_id="c", reply_to=1, text=text)
        await settle(status)
    edits = chat.of_kind("edit")
    assert [e.text for e in edits] == ["two", "three", "four"]
    gaps = [later.at_s - earlier.at_s for earlier, later in itertools.pairwise(edits)]
    assert all(gap >= INTERVAL_S for gap in gaps)


async def test_unchanged_text_is_never_resent() -> None:
    clock = FakeClock()
    chat = RecordingChat(clock=clock)
    status = make(chat, clock)
    for _ in range(5):
        status.show("j1", chat_id="c", reply_to=1, text="queued 1")
        await settle(status)
    assert len(chat.events) == 1


async def test_pacing_is_per_chat_and_shared_by_jobs_in_it() -> None:
    clock = FakeClock()
    chat = RecordingChat(clock=clock)
    status = make(chat, clock)
    status.show("a", chat_id="c1", reply_to=1, text="a1")
    status.show("b", chat_id="c1", reply_to=2, text="b1")
    status.show("x", chat_id="c2", reply_to=3, text="x1")
    await settle(status)
    status.show("a", chat_id="c1", reply_to=1, text="a2")
    status.show("b", chat_id="c1", reply_to=2, text="b2")
    await settle(status)
    times = {event.text: event.at_s for event in chat.events}
    assert times["b1"] - times["a1"] >= SEND_GAP_S  # same chat: paced
    assert times["b2"] - times["a2"] >= INTERVAL_S  # edits of two jobs share the interval
    assert times["x1"] < times["b1"]  # other chat: not held back by c1


async def test_final_delete_skips_pacing() -> None:
    clock = FakeClock()
    chat = RecordingChat(clock=clock)
    status = make(chat, clock)
    status.show("j1", chat_id="c", reply_to=1, text="generating")
    await settle(status)
    sent_at = clock()
    status.show("j1", chat_id="c", reply_to=1, text="sending")
    status.finish("j1")
    await settle(status)
    assert [e.kind for e in chat.events] == ["send", "delete"]
    assert chat.events[-1].at_s == sent_at  # not delayed by the 3 s interval
    assert chat.visible_texts() == []
    assert status.pending() == 0


async def test_finish_before_anything_was_sent_sends_nothing() -> None:
    clock = FakeClock()
    chat = RecordingChat(clock=clock)
    status = make(chat, clock)
    status.show("a", chat_id="c", reply_to=1, text="a")
    status.show("b", chat_id="c", reply_to=2, text="b queued")
    status.finish("b")
    await settle(status)
    assert [e.text for e in chat.events] == ["a"]


async def test_final_error_replaces_the_status_at_once() -> None:
    clock = FakeClock()
    chat = RecordingChat(clock=clock)
    status = make(chat, clock)
    status.show("j1", chat_id="c", reply_to=1, text="generating")
    await settle(status)
    status.finish("j1", final_text="❌ The worker failed.")
    await settle(status)
    assert chat.visible_texts() == ["❌ The worker failed."]
    assert chat.events[-1].at_s == chat.events[0].at_s


async def test_final_error_without_a_status_is_sent_as_a_reply() -> None:
    clock = FakeClock()
    chat = RecordingChat(clock=clock)
    status = make(chat, clock)
    status.show("a", chat_id="c", reply_to=1, text="a")
    status.show("b", chat_id="c", reply_to=2, text="b queued")
    status.finish("b", final_text="❌ nope")
    await settle(status)
    # Finals go before paced texts: the error is the more important message.
    assert [(e.text, e.reply_to) for e in chat.events] == [("❌ nope", 2), ("a", 1)]


async def test_message_not_modified_counts_as_success() -> None:
    clock = FakeClock()
    chat = RecordingChat(clock=clock, edit_failures=[MessageNotModified("same")])
    status = make(chat, clock)
    status.show("j1", chat_id="c", reply_to=1, text="one")
    await settle(status)
    status.show("j1", chat_id="c", reply_to=1, text="two")
    await settle(status)
    status.finish("j1")
    await settle(status)
    assert [e.kind for e in chat.events] == ["send", "delete"]


async def test_flood_wait_mutes_the_chat_then_the_final_still_goes_out() -> None:
    clock = FakeClock()
    chat = RecordingChat(clock=clock, edit_failures=[FloodWait(30)])
    status = make(chat, clock)
    status.show("j1", chat_id="c", reply_to=1, text="queued")
    await settle(status)
    clock.advance(INTERVAL_S)  # the next edit may go at once
    clock.gate = asyncio.Event()  # the muted lane sleeps until we let it go
    started = clock()
    status.show("j1", chat_id="c", reply_to=1, text="generating")  # hits the flood wait
    await until(lambda: status.counters.flood_waits == 1, waiting_for="the edit's flood wait")
    status.show("j1", chat_id="c", reply_to=1, text="sending")
    status.finish("j1", final_text="❌ failed")
    clock.gate.set()
    await settle(status)
    assert status.counters.flood_waits == 1
    last = chat.events[-1]
    assert (last.kind, last.text) == ("edit", "❌ failed")
    assert last.at_s >= started + 30
    assert "sending" not in [e.text for e in chat.events]


async def test_show_never_waits_for_the_chat() -> None:
    """A queue worker calls show(); a chat that hangs must not hold it."""

    class HangingChat(RecordingChat):
        release = asyncio.Event()

        async def send_text(
            self,
            chat_id: str,
            text: str,
            *,
            reply_to: int | None,
            actions: tuple[Action, ...] = (),
        ) -> int:
            await self.release.wait()
            return await super().send_text(chat_id, text, reply_to=reply_to, actions=actions)

    clock = FakeClock()
    chat = HangingChat(clock=clock)
    status = make(chat, clock)
    status.show("j1", chat_id="c", reply_to=1, text="queued")  # returns at once
    status.finish("j1", final_text="❌ x")
    assert chat.events == []
    chat.release.set()
    await settle(status)
    assert chat.visible_texts() == ["❌ x"]


async def test_a_failing_status_edit_does_not_stop_the_lane() -> None:
    clock = FakeClock()
    chat = RecordingChat(clock=clock, edit_failures=[ChatError("gone")])
    status = make(chat, clock)
    status.show("j1", chat_id="c", reply_to=1, text="one")
    await settle(status)
    status.show("j1", chat_id="c", reply_to=1, text="two")  # fails, logged
    await settle(status)
    status.finish("j1")
    await settle(status)
    assert [e.kind for e in chat.events] == ["send", "delete"]
    assert status.pending() == 0


async def test_a_new_status_goes_before_edits_of_older_ones() -> None:
    clock = FakeClock()
    chat = RecordingChat(clock=clock)
    status = make(chat, clock)
    status.show("old", chat_id="c", reply_to=1, text="queued")
    await settle(status)
    status.show("old", chat_id="c", reply_to=1, text="generating")
    status.show("new", chat_id="c", reply_to=2, text="new queued")
    await settle(status)
    assert [(e.kind, e.text) for e in chat.events] == [
        ("send", "queued"),
        ("send", "new queued"),
        ("edit", "generating"),
    ]


async def test_a_text_given_as_a_function_is_written_only_when_sent() -> None:
    clock = FakeClock()
    chat = RecordingChat(clock=clock)
    status = make(chat, clock)
    written: list[str] = []

    def text(position: int) -> str:
        written.append(f"position {position}")
        return written[-1]

    status.show("j1", chat_id="c", reply_to=1, text="queued")
    await settle(status)
    for position in (9, 8, 7, 6, 5):
        status.show("j1", chat_id="c", reply_to=1, text=partial(text, position))
    await settle(status)
    # Only the text that reached the chat was ever written.
    assert written == ["position 5"]
    assert [e.text for e in chat.of_kind("edit")] == ["position 5"]


async def test_serving_ten_thousand_chats_leaves_no_lanes() -> None:
    clock = FakeClock()
    chat = RecordingChat(clock=clock)
    status = make(chat, clock)
    for n in range(10_000):
        status.show(f"j{n}", chat_id=f"chat{n}", reply_to=1, text="queued")
    await settle(status)
    assert status.lane_count() == 10_000
    for n in range(10_000):
        status.finish(f"j{n}")
    await settle(status)
    assert status.lane_count() == 0
    assert status.pending() == 0
    # A status never shown ends without a lane left behind either.
    status.show("late", chat_id="other", reply_to=1, text="queued")
    status.finish("late")
    await settle(status)
    assert status.lane_count() == 0

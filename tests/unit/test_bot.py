"""What a chat sees of refusals: a flood gets a few answers, one "slow down", then silence."""

from __future__ import annotations

from sakaibot.app import App, build_app
from sakaibot.chat.port import IncomingMessage
from sakaibot.pipeline import JobOutcome
from sakaibot.settings import load_settings
from tests.support.fakes import FakeClock, FakeGenerator, RecordingChat

SLOW_DOWN = (
    "✋ Slow down: too many of your commands could not be taken. Commands of yours that "
    "fail get no answer for the next 1 min; /image help shows how to write them."
)


def make_app(
    clock: FakeClock, chat: RecordingChat, **extra: object
) -> tuple[App, list[JobOutcome]]:
    outcomes: list[JobOutcome] = []
    settings = load_settings(
        env_file=None,
        flux_worker_url="http://127.0.0.1:9/flux",
        llm_provider="none",
        status_edit_interval_s=0,
        **extra,
    )
    app = build_app(
        settings,
        chat,
        on_outcome=outcomes.append,
        generator=FakeGenerator(),
        clock=clock,
        wall_clock=clock,
        sleep=clock.sleep,
    )
    return app, outcomes


class Group:
    """One group chat: who says what, and what the bot's account answers to it."""

    def __init__(self, app: App, chat: RecordingChat) -> None:
        self.app = app
        self.chat = chat
        self.next_id = 1

    async def say(self, user: str, text: str, *, from_owner: bool = False) -> list[str]:
        message_id = self.next_id
        self.next_id += 1
        message = IncomingMessage("group", message_id, user, text, from_owner=from_owner)
        await self.app.bot.handle(message)
        return [event.text for event in self.chat.events if event.reply_to == message_id]


async def test_a_flood_of_bad_commands_gets_three_answers_one_slow_down_then_silence() -> None:
    clock = FakeClock()
    chat = RecordingChat(clock=clock)
    app, outcomes = make_app(clock, chat)
    group = Group(app, chat)
    answers = [await group.say("mallory", "/image=dalle=a cat") for _ in range(50)]
    unknown = "❌ Unknown model 'dalle'. Available models: flux. Example: /image=flux="
    assert all(reply[0].startswith(unknown) for reply in answers[:3])
    assert answers[3] == [SLOW_DOWN]
    assert answers[4:] == [[]] * 46
    assert len(chat.events) == 4
    # Every refusal still has its result (for the JSON stream and the logs).
    assert len(outcomes) == 50
    # Someone else in the same group is answered as usual.
    assert (await group.say("ann", "/image=dalle=a dog"))[0].startswith(unknown)
    # Still within the window: silence, whatever the refusal.
    clock.advance(59)
    assert await group.say("mallory", "/image history many") == []
    # The window has passed: mallory is answered again.
    clock.advance(1)
    assert (await group.say("mallory", "/image=dalle=a cat"))[0].startswith(unknown)


async def test_accepted_commands_are_answered_during_the_silence() -> None:
    clock = FakeClock()
    chat = RecordingChat(clock=clock)
    app, _ = make_app(clock, chat)
    group = Group(app, chat)
    for _ in range(4):
        await group.say("mallory", "/image cancel")
    assert await group.say("mallory", "/image cancel") == []
    status = await group.say("mallory", "/image status")
    assert status == [
        "You have no images waiting or in progress. "
        "Start one with /image=flux=a red fox in the snow"
    ]


async def test_the_owner_is_always_answered() -> None:
    clock = FakeClock()
    chat = RecordingChat(clock=clock)
    app, _ = make_app(clock, chat)
    group = Group(app, chat)
    for _ in range(10):
        reply = await group.say("me", "/image=dalle=a cat", from_owner=True)
        assert reply[0].startswith("❌ Unknown model 'dalle'")


async def test_the_number_of_answers_and_the_window_are_settings() -> None:
    clock = FakeClock()
    chat = RecordingChat(clock=clock)
    app, _ = make_app(clock, chat, image_rejection_replies=1, image_rejection_window_s=600)
    group = Group(app, chat)
    assert (await group.say("mallory", "/image cancel"))[0].startswith("❌ You have no")
    assert (await group.say("mallory", "/image cancel"))[0].startswith("✋ Slow down")
    assert "for the next 10 min;" in chat.events[-1].text
    clock.advance(599)
    assert await group.say("mallory", "/image cancel") == []
    clock.advance(1)
    assert (await group.say("mallory", "/image cancel"))[0].startswith("❌ You have no")


async def test_zero_answers_every_refusal() -> None:
    clock = FakeClock()
    chat = RecordingChat(clock=clock)
    app, _ = make_app(clock, chat, image_rejection_replies=0)
    group = Group(app, chat)
    for _ in range(20):
        assert (await group.say("mallory", "/image cancel"))[0].startswith("❌ You have no")


async def test_a_typo_gets_one_line_with_the_command_to_send() -> None:
    clock = FakeClock()
    chat = RecordingChat(clock=clock)
    app, outcomes = make_app(clock, chat)
    group = Group(app, chat)
    assert await group.say("ann", "/image flux a fox") == ["Did you mean: /image=flux=a fox"]
    assert await group.say("ann", "/image=flux a fox") == ["Did you mean: /image=flux=a fox"]
    assert [(o.ok, o.error_kind) for o in outcomes] == [(False, "usage")]

"""The same behaviour whichever backend holds the shared state: this process, or Redis.

One set of tests, parametrised by backend. The Redis runs use a real
redis-server (they skip, saying how to run them, when it is not installed).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from uuid import uuid4

import pytest

from sakaibot.app import App, build_app
from sakaibot.chat.port import IncomingMessage
from sakaibot.pipeline import JobOutcome
from sakaibot.settings import load_settings
from tests.support.fakes import FakeEnhancer, FakeGenerator, RecordingChat
from tests.support.redis_server import RedisServer, redis_server_executable
from tests.support.waiting import until, until_ended


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    redis_server_executable()  # skips with instructions when redis-server is missing
    with RedisServer(tmp_path_factory.mktemp("redis")) as server:
        yield server.url


@dataclass
class Bot:
    app: App
    chat: RecordingChat
    generator: FakeGenerator
    outcomes: list[JobOutcome]

    async def say(self, message_id: int, text: str, user: str = "ann") -> None:
        await self.app.bot.handle(IncomingMessage("chat", message_id, user, text))

    def replies(self, message_id: int) -> list[str]:
        return [e.text for e in self.chat.events if e.reply_to == message_id]


@pytest.fixture(params=["local", "redis"])
async def make_bot(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[Callable[..., Bot]]:
    built: list[App] = []
    bots: list[Bot] = []
    extra: dict[str, object] = {}
    if request.param == "redis":
        url = request.getfixturevalue("redis_url")
        # One job per model in the shared queue at a time, so the rest wait here
        # (where /image cancel reaches them), as in one process.
        extra = {
            "redis_url": url,
            "redis_prefix": f"t-{uuid4().hex[:8]}",
            "redis_inflight_per_model": 1,
        }

    def make(generator: FakeGenerator | None = None, **settings: object) -> Bot:
        chat = RecordingChat()
        outcomes: list[JobOutcome] = []
        generator = generator or FakeGenerator()
        values: dict[str, object] = {
            "flux_worker_url": "http://127.0.0.1:9/flux",
            "sdxl_worker_url": "http://127.0.0.1:9/sdxl",
            "sdxl_api_key": "k",
            "sakaibot_data_dir": tmp_path / f"data{len(built)}",
            "status_edit_interval_s": 0,
            **extra,
            **settings,
        }
        app = build_app(
            load_settings(env_file=None, **values),
            chat,
            on_outcome=outcomes.append,
            generator=generator,
            enhancer=FakeEnhancer(),
        )
        built.append(app)
        bots.append(Bot(app, chat, generator, outcomes))
        return bots[-1]

    yield make
    for bot_made in bots:
        if bot_made.generator.gate is not None:
            bot_made.generator.gate.set()  # a test that failed early left a job held
    for app in built:
        async with asyncio.timeout(15):  # a stuck stop fails the test, never hangs the run
            await app.aclose()


async def test_each_command_gets_its_image_in_order(make_bot: Callable[..., Bot]) -> None:
    bot = make_bot(image_user_limits="off")
    await bot.app.start()
    for n in range(1, 5):
        await bot.say(n, f"/image=flux=fox {n}", user=f"u{n}")
    await until_ended(bot.app, bot.outcomes, 4)
    assert [params.prompt for _, params in bot.generator.calls] == [
        f"enhanced: fox {n}" for n in range(1, 5)
    ]
    assert sorted(e.reply_to for e in bot.chat.of_kind("image")) == [1, 2, 3, 4]


async def test_the_rate_limit_counts_accepted_requests(make_bot: Callable[..., Bot]) -> None:
    bot = make_bot(image_user_limits="2/1h")
    await bot.app.start()
    await bot.say(1, "/image=dalle=not a model")
    await bot.say(2, "/image=flux=one")
    await bot.say(3, "/image=flux=two")
    await bot.say(4, "/image=flux=three")
    assert bot.replies(4)[0].startswith("❌ You have reached the limit of 2 images per 1 h.")
    # Refusals are outcomes too: two of them, then the two accepted jobs, delivered.
    await until_ended(bot.app, bot.outcomes, 4, within_s=30)
    assert sorted((o.reply_to, o.ok) for o in bot.outcomes) == [
        (1, False),
        (2, True),
        (3, True),
        (4, False),
    ]


async def test_the_same_request_again_comes_from_the_cache(make_bot: Callable[..., Bot]) -> None:
    bot = make_bot(image_user_limits="off")
    await bot.app.start()
    await bot.say(1, "/image=flux=a red fox")
    await until_ended(bot.app, bot.outcomes, 1)
    await bot.say(2, "/image=flux=a  RED fox")
    await until_ended(bot.app, bot.outcomes, 2)
    assert len(bot.generator.calls) == 1
    assert " · from cache" in bot.chat.of_kind("image")[-1].text.split("\n")[0]


async def test_a_waiting_job_can_be_cancelled(make_bot: Callable[..., Bot]) -> None:
    bot = make_bot(image_user_limits="off", image_user_max_pending=5)
    bot.generator.gate = asyncio.Event()
    await bot.app.start()
    await bot.say(1, "/image=flux=first", user="bob")
    await until(lambda: bot.generator.running == 1, waiting_for="bob's job to start")
    await bot.say(2, "/image=flux=second")
    await bot.say(3, "/image cancel")
    assert bot.replies(3)[0].startswith("🚫 Cancelled job ")
    bot.generator.gate.set()
    await until_ended(bot.app, bot.outcomes, 2)
    assert [params.prompt for _, params in bot.generator.calls] == ["enhanced: first"]


async def test_submit_then_cancel_still_counts_toward_the_limit(
    make_bot: Callable[..., Bot],
) -> None:
    bot = make_bot(image_user_limits="10/1m", image_user_max_pending=5)
    bot.generator.gate = asyncio.Event()
    await bot.app.start()
    await bot.say(1, "/image=flux=first", user="bob")  # holds the model: ann's jobs wait
    await until(lambda: bot.generator.running == 1, waiting_for="bob's job to start")
    accepted = 0
    refusal: list[str] = []
    for n in range(300):
        submit, cancel = 10 + 2 * n, 11 + 2 * n
        await bot.say(submit, f"/image=flux=fox {n}")
        refusal = [text for text in bot.replies(submit) if text.startswith("❌")]
        if refusal:
            break
        accepted += 1
        await bot.say(cancel, "/image cancel")
        assert bot.replies(cancel)[0].startswith("🚫 Cancelled job "), bot.replies(cancel)
    assert accepted == 10  # the 11th request is refused, cancels or not
    assert refusal[0].startswith("❌ You have reached the limit of 10 images per 1 min.")
    bot.generator.gate.set()


async def test_a_failure_is_told_and_refunded(make_bot: Callable[..., Bot]) -> None:
    from sakaibot.errors import WorkerGaveUp

    bot = make_bot(
        FakeGenerator(errors=[WorkerGaveUp("503", model="Flux", attempts=2)]),
        image_user_limits="1/1h",
    )
    await bot.app.start()
    await bot.say(1, "/image=flux=one")
    await until_ended(bot.app, bot.outcomes, 1)
    assert not bot.outcomes[0].ok
    assert bot.outcomes[0].error is not None
    assert "tried 2 times" in bot.outcomes[0].error
    await bot.say(2, "/image=flux=two")  # the slot came back
    await until_ended(bot.app, bot.outcomes, 2)
    assert bot.outcomes[1].ok


async def test_a_filtered_prompt_keeps_its_slot(make_bot: Callable[..., Bot]) -> None:
    from sakaibot.errors import ContentFiltered

    bot = make_bot(
        FakeGenerator(errors=[ContentFiltered("nsfw", model="Flux")]),
        image_user_limits="1/1h",
    )
    await bot.app.start()
    await bot.say(1, "/image=flux=something")
    await until_ended(bot.app, bot.outcomes, 1)
    assert bot.outcomes[0].error_kind == "content_filtered"
    await bot.say(2, "/image=flux=another")
    assert bot.replies(2)[0].startswith("❌ You have reached the limit of 1 image per 1 h.")

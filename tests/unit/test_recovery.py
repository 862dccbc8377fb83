"""Restarts: unfinished jobs and rate windows come back from the store; nothing twice."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from sakaibot.app import App, build_app
from sakaibot.chat.port import IncomingMessage
from sakaibot.errors import ChatError, GenerationError, WorkerGaveUp
from sakaibot.generation import GenerationParams, GenerationResult
from sakaibot.models import ModelSpec
from sakaibot.pipeline import JobOutcome
from sakaibot.settings import load_settings
from sakaibot.store import JobRecord, StoredJobState
from tests.support.fakes import FakeClock, FakeEnhancer, FakeGenerator, RecordingChat, tiny_image

SETTINGS = {
    "flux_worker_url": "http://127.0.0.1:9/flux",
    "sdxl_worker_url": "http://127.0.0.1:9/sdxl",
    "sdxl_api_key": "k",
    "status_edit_interval_s": 0.0,
}


def make_app(
    data_dir: Path, chat: RecordingChat, generator: FakeGenerator, clock: FakeClock, **extra: object
) -> tuple[App, list[JobOutcome]]:
    outcomes: list[JobOutcome] = []
    app = build_app(
        load_settings(env_file=None, sakaibot_data_dir=data_dir, **{**SETTINGS, **extra}),
        chat,
        on_outcome=outcomes.append,
        generator=generator,
        enhancer=FakeEnhancer(),
        clock=clock,
        wall_clock=clock,
        sleep=clock.sleep,
    )
    return app, outcomes


async def say(app: App, message_id: int, text: str, user: str = "ann") -> None:
    await app.bot.handle(IncomingMessage("chat", message_id, user, text))


async def crash(app: App) -> None:
    """Stop as a killed process would: nothing finishes, nothing is told."""
    await app.aclose()


async def test_waiting_jobs_come_back_in_order_and_are_delivered_once(tmp_path: Path) -> None:
    clock = FakeClock()
    chat = RecordingChat(clock=clock)
    held = FakeGenerator(gate=asyncio.Event())
    first, _ = make_app(tmp_path, chat, held, clock)
    await first.start()
    for n in range(1, 5):
        await say(first, n, f"/image=flux=fox number {n}", user=f"u{n}")
    await asyncio.wait_for(first.status.drain(), timeout=5)
    statuses_before = {e.reply_to: e.message_id for e in chat.of_kind("send")}
    assert len(statuses_before) == 4  # every user was told
    await crash(first)

    generator = FakeGenerator()
    second, outcomes = make_app(tmp_path, chat, generator, clock)
    await second.start()
    await asyncio.wait_for(second.drain(), timeout=10)
    await second.aclose()

    # The one that was generating is generated again; all in their original order.
    assert [params.prompt for _, params in generator.calls] == [
        f"enhanced: fox number {n}" for n in range(1, 5)
    ]
    images = chat.of_kind("image")
    assert sorted(e.reply_to for e in images) == [1, 2, 3, 4]
    assert [o.ok for o in outcomes] == [True] * 4
    # The status messages from before the restart were taken over, not repeated.
    sends_after = [e for e in chat.of_kind("send") if e.message_id not in statuses_before.values()]
    assert sends_after == []
    assert chat.visible_texts() == []


async def test_a_job_already_delivered_is_not_sent_again(tmp_path: Path) -> None:
    clock = FakeClock()
    chat = RecordingChat(clock=clock)
    first, _ = make_app(tmp_path, chat, FakeGenerator(), clock)
    await first.start()
    await say(first, 1, "/image=flux=a fox")
    await asyncio.wait_for(first.drain(), timeout=5)
    [job] = await first.store.history("ann", 1)
    await first.aclose()
    # As if the process died between the upload and writing "done".
    second, outcomes = make_app(tmp_path, chat, FakeGenerator(), clock)
    await second.store.open()
    await second.store.update_job(job.id, state=StoredJobState.DELIVERING)
    await second.store.close()

    third_generator = FakeGenerator()
    third, outcomes = make_app(tmp_path, chat, third_generator, clock)
    await third.start()
    await asyncio.wait_for(third.drain(), timeout=5)
    record = await third.store.get_job(job.id)
    await third.aclose()
    assert len(chat.of_kind("image")) == 1
    assert third_generator.calls == []
    assert record is not None
    assert record.state == StoredJobState.DONE
    assert [o.ok for o in outcomes] == [True]


async def test_a_job_cut_off_while_sending_is_sent_from_its_kept_image(tmp_path: Path) -> None:
    clock = FakeClock()
    chat = RecordingChat(clock=clock)
    # The upload never completes in the first life: the process "dies" during it.
    upload_started = asyncio.Event()

    async def dying_upload(*args: object, **kwargs: object) -> int:
        upload_started.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    original_send_image = chat.send_image
    chat.send_image = dying_upload  # type: ignore[assignment, method-assign]
    first, _ = make_app(tmp_path, chat, FakeGenerator(), clock)
    await first.start()
    await say(first, 1, "/image=flux=a fox --seed 3")
    await asyncio.wait_for(upload_started.wait(), timeout=5)
    await crash(first)

    chat.send_image = original_send_image  # type: ignore[method-assign]
    generator = FakeGenerator()
    second, outcomes = make_app(tmp_path, chat, generator, clock)
    await second.start()
    await asyncio.wait_for(second.drain(), timeout=5)
    await second.aclose()
    assert generator.calls == []  # not generated again: the kept image was sent
    [image] = chat.of_kind("image")
    assert image.reply_to == 1
    assert "seed 3" in image.text
    assert [o.ok for o in outcomes] == [True]


async def test_each_recovered_job_teaches_the_chat_its_address_first(tmp_path: Path) -> None:
    clock = FakeClock()
    chat = RecordingChat(clock=clock)
    first, _ = make_app(tmp_path, chat, FakeGenerator(gate=asyncio.Event()), clock)
    await first.start()
    await first.bot.handle(
        IncomingMessage("42", 1, "ann", "/image=flux=a fox", chat_address="user:42:777")
    )
    await first.bot.handle(IncomingMessage("-5", 2, "bob", "/image=flux=a cat"))  # no address
    await asyncio.wait_for(first.status.drain(), timeout=5)
    await crash(first)

    fresh = RecordingChat(clock=clock)  # a new process: its chat has learned nothing yet
    second, outcomes = make_app(tmp_path, fresh, FakeGenerator(), clock)
    await second.start()
    assert fresh.addresses == {"42": "user:42:777"}
    await asyncio.wait_for(second.drain(), timeout=5)
    await second.aclose()
    assert [o.ok for o in outcomes] == [True, True]


async def test_a_chat_that_cannot_be_searched_gets_the_image_rather_than_nothing(
    tmp_path: Path,
) -> None:
    clock = FakeClock()
    chat = RecordingChat(clock=clock)
    upload_started = asyncio.Event()

    async def dying_upload(*args: object, **kwargs: object) -> int:
        upload_started.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    original_send_image = chat.send_image
    chat.send_image = dying_upload  # type: ignore[assignment, method-assign]
    first, _ = make_app(tmp_path, chat, FakeGenerator(), clock)
    await first.start()
    await say(first, 1, "/image=flux=a fox")
    await asyncio.wait_for(upload_started.wait(), timeout=5)
    await crash(first)

    chat.send_image = original_send_image  # type: ignore[method-assign]

    async def search_refused(*args: object, **kwargs: object) -> int | None:
        raise ChatError("telegram refused: FloodWaitError")

    chat.find_delivered = search_refused  # type: ignore[method-assign]
    second, outcomes = make_app(tmp_path, chat, FakeGenerator(), clock)
    await second.start()
    await asyncio.wait_for(second.drain(), timeout=5)
    await second.aclose()
    [image] = chat.of_kind("image")
    assert image.reply_to == 1
    assert [o.ok for o in outcomes] == [True]


async def test_rate_windows_survive_a_restart(tmp_path: Path) -> None:
    clock = FakeClock()
    chat = RecordingChat(clock=clock)
    first, _ = make_app(tmp_path, chat, FakeGenerator(), clock, image_user_limits="2/1h")
    await first.start()
    await say(first, 1, "/image=flux=one")
    await say(first, 2, "/image=flux=two")
    await asyncio.wait_for(first.drain(), timeout=5)
    await first.aclose()

    second, _ = make_app(tmp_path, chat, FakeGenerator(), clock, image_user_limits="2/1h")
    await second.start()
    try:
        await say(second, 3, "/image=flux=three")
        [reply] = [e.text for e in chat.events if e.reply_to == 3]
        assert reply.startswith("❌ You have reached the limit of 2 images per 1 h.")
    finally:
        await second.aclose()


async def test_a_refund_is_remembered_across_a_restart(tmp_path: Path) -> None:
    from sakaibot.errors import WorkerGaveUp

    clock = FakeClock()
    chat = RecordingChat(clock=clock)
    failing = FakeGenerator(errors=[WorkerGaveUp("503", model="Flux", attempts=3)])
    first, _ = make_app(tmp_path, chat, failing, clock, image_user_limits="1/1h")
    await first.start()
    await say(first, 1, "/image=flux=one")
    await asyncio.wait_for(first.drain(), timeout=5)
    await first.aclose()

    second, outcomes = make_app(tmp_path, chat, FakeGenerator(), clock, image_user_limits="1/1h")
    await second.start()
    await say(second, 2, "/image=flux=two")
    await asyncio.wait_for(second.drain(), timeout=5)
    await second.aclose()
    assert [o.ok for o in outcomes] == [True]


async def test_a_job_whose_model_is_gone_is_told_so(tmp_path: Path) -> None:
    clock = FakeClock()
    chat = RecordingChat(clock=clock)
    first, _ = make_app(tmp_path, chat, FakeGenerator(gate=asyncio.Event()), clock)
    await first.start()
    await say(first, 1, "/image=sdxl=a lighthouse")
    await say(first, 2, "/image=sdxl=a second lighthouse", user="bob")
    await asyncio.wait_for(first.status.drain(), timeout=5)
    await crash(first)

    only_flux = {"sdxl_worker_url": None, "sdxl_api_key": None}
    second, outcomes = make_app(tmp_path, chat, FakeGenerator(), clock, **only_flux)
    await second.start()
    await asyncio.wait_for(second.drain(), timeout=5)
    await second.aclose()
    assert [o.error_kind for o in outcomes] == ["model_gone", "model_gone"]
    assert (
        chat.visible_texts()
        == [
            "❌ SakaiBot restarted and the sdxl model is no longer offered, so this image "
            "could not be made. Your allowance was not used; see /image models."
        ]
        * 2
    )


async def test_a_cancelled_job_stays_cancelled_after_a_restart(tmp_path: Path) -> None:
    clock = FakeClock()
    chat = RecordingChat(clock=clock)
    first, _ = make_app(tmp_path, chat, FakeGenerator(gate=asyncio.Event()), clock)
    await first.start()
    await say(first, 1, "/image=flux=running")
    await say(first, 2, "/image=flux=cancel me", user="bob")
    await say(first, 3, "/image cancel", user="bob")
    await crash(first)

    generator = FakeGenerator()
    second, outcomes = make_app(tmp_path, chat, generator, clock)
    await second.start()
    await asyncio.wait_for(second.drain(), timeout=5)
    await second.aclose()
    assert [params.prompt for _, params in generator.calls] == ["enhanced: running"]
    assert [o.reply_to for o in outcomes] == [1]


async def test_one_data_folder_serves_one_bot(tmp_path: Path) -> None:
    from sakaibot.errors import StoreUnavailable

    clock = FakeClock()
    first, _ = make_app(tmp_path, RecordingChat(clock=clock), FakeGenerator(), clock)
    second, _ = make_app(tmp_path, RecordingChat(clock=clock), FakeGenerator(), clock)
    await first.start()
    try:
        with pytest.raises(StoreUnavailable, match="another SakaiBot is already using"):
            await second.start()
    finally:
        await first.aclose()
        await second.aclose()
    third, _ = make_app(tmp_path, RecordingChat(clock=clock), FakeGenerator(), clock)
    await third.start()  # free again once the first has stopped
    await third.aclose()


class ScriptedGenerator(FakeGenerator):
    """Answers the first calls as scripted (an image, or an error), then holds the rest."""

    def __init__(self, *script: GenerationError | None) -> None:
        super().__init__()
        self.script = list(script)
        self.holding = asyncio.Event()

    async def generate(self, model: ModelSpec, params: GenerationParams) -> GenerationResult:
        self.calls.append((model.name, params))
        if not self.script:
            self.holding.set()
            await asyncio.Event().wait()
        error = self.script.pop(0)
        if error is not None:
            return GenerationResult(False, None, error)
        return GenerationResult(True, tiny_image(), None)


async def test_an_album_comes_back_together_and_is_sent_once(tmp_path: Path) -> None:
    clock = FakeClock()
    chat = RecordingChat(clock=clock)
    # Image 1 is made (and held), image 2 fails, image 3 is cut off by the crash.
    scripted = ScriptedGenerator(None, WorkerGaveUp("503", model="Flux", attempts=3))
    first, first_outcomes = make_app(tmp_path, chat, scripted, clock, llm_provider="none")
    await first.start()
    await say(first, 1, "/image=flux=a fox --seed 10 --n 3")
    await asyncio.wait_for(scripted.holding.wait(), timeout=5)
    # Image 1 is kept and noted as being delivered (held for the album).
    await asyncio.wait_for(first.pipeline.drain(), timeout=5)
    await asyncio.wait_for(first.status.drain(), timeout=5)
    statuses_before = {e.message_id for e in chat.of_kind("send")}
    assert len(statuses_before) == 1
    await crash(first)
    assert first_outcomes == []
    assert chat.of_kind("image") == []

    generator = FakeGenerator()
    second, outcomes = make_app(tmp_path, chat, generator, clock, llm_provider="none")
    await second.start()
    await asyncio.wait_for(second.drain(), timeout=10)
    await second.aclose()
    # Only the image cut off is made again, with its own seed.
    assert [params.seed for _, params in generator.calls] == [12]
    images = chat.of_kind("image")
    assert len(images) == 2
    assert len(chat.albums) == 1
    caption = images[0].text
    assert "1: seed 10" in caption
    assert "2: not made (worker unavailable)" in caption
    assert "3: seed 12" in caption
    [outcome] = outcomes
    assert outcome.ok
    assert f"#{outcome.job_id}" in caption
    # The status message from before the restart was taken over, then removed.
    assert [e for e in chat.of_kind("send") if e.message_id not in statuses_before] == []
    assert chat.visible_texts() == []


async def test_an_album_cut_off_while_sending_is_sent_from_its_kept_images(
    tmp_path: Path,
) -> None:
    clock = FakeClock()
    chat = RecordingChat(clock=clock)
    upload_started = asyncio.Event()

    async def dying_upload(*args: object, **kwargs: object) -> list[int]:
        upload_started.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    original_send_album = chat.send_album
    chat.send_album = dying_upload  # type: ignore[assignment, method-assign]
    first, _ = make_app(tmp_path, chat, FakeGenerator(), clock)
    await first.start()
    await say(first, 1, "/image=flux=a fox --seed 3 --n 2")
    await asyncio.wait_for(upload_started.wait(), timeout=5)
    await crash(first)

    chat.send_album = original_send_album  # type: ignore[method-assign]
    generator = FakeGenerator()
    second, outcomes = make_app(tmp_path, chat, generator, clock)
    await second.start()
    await asyncio.wait_for(second.drain(), timeout=5)
    await second.aclose()
    assert generator.calls == []
    assert len(chat.albums) == 1
    assert "1: seed 3" in chat.of_kind("image")[0].text
    assert [o.ok for o in outcomes] == [True]


async def test_an_album_already_delivered_is_not_sent_again(tmp_path: Path) -> None:
    clock = FakeClock()
    chat = RecordingChat(clock=clock)
    first, first_outcomes = make_app(tmp_path, chat, FakeGenerator(), clock)
    await first.start()
    await say(first, 1, "/image=flux=a fox --n 2")
    await asyncio.wait_for(first.drain(), timeout=5)
    await first.aclose()
    [album] = first_outcomes
    assert album.job_id is not None
    jobs = await _album_records(tmp_path, chat, clock, album.job_id)
    # As if the process died between the upload and writing "done".
    second, _ = make_app(tmp_path, chat, FakeGenerator(), clock)
    await second.store.open()
    for job in jobs:
        await second.store.update_job(job.id, state=StoredJobState.DELIVERING)
    await second.store.close()

    generator = FakeGenerator()
    third, outcomes = make_app(tmp_path, chat, generator, clock)
    await third.start()
    await asyncio.wait_for(third.drain(), timeout=5)
    records = [await third.store.get_job(job.id) for job in jobs]
    await third.aclose()
    assert len(chat.albums) == 1
    assert generator.calls == []
    assert [r.state if r else None for r in records] == [StoredJobState.DONE] * 2
    assert [(o.ok, o.job_id) for o in outcomes] == [(True, album.job_id)]


async def _album_records(
    data_dir: Path, chat: RecordingChat, clock: FakeClock, album_id: str
) -> list[JobRecord]:
    app, _ = make_app(data_dir, chat, FakeGenerator(), clock)
    await app.store.open()
    try:
        return await app.store.album_jobs(album_id)
    finally:
        await app.store.close()

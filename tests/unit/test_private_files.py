"""The data folder on a real disk: owner-only from the start, and tightened when found looser."""

from __future__ import annotations

import asyncio
import logging
import os
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from sakaibot.app import App, build_app
from sakaibot.chat.port import IncomingMessage
from sakaibot.errors import ChatError
from sakaibot.pipeline import JobOutcome
from sakaibot.private_files import make_private_dir, tighten, write_private
from sakaibot.settings import load_settings
from tests.support.fakes import FakeClock, FakeGenerator, RecordingChat

#: umask is one value for the whole process: tests that change it take turns.
_UMASK_LOCK = threading.Lock()


@pytest.fixture
def loose_umask() -> Iterator[None]:
    """The common default, under which plain file creation gives 0644 and 0755."""
    with _UMASK_LOCK:
        previous = os.umask(0o022)
        try:
            yield
        finally:
            os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def everything_under(folder: Path) -> list[Path]:
    return [folder, *sorted(folder.rglob("*"))]


def make_app(data_dir: Path, chat: RecordingChat, outcomes: list[JobOutcome]) -> App:
    clock = FakeClock()
    settings = load_settings(
        env_file=None,
        flux_worker_url="http://127.0.0.1:9/flux",
        llm_provider="none",
        status_edit_interval_s=0,
        sakaibot_data_dir=data_dir,
    )
    return build_app(
        settings,
        chat,
        on_outcome=outcomes.append,
        generator=FakeGenerator(),
        clock=clock,
        wall_clock=clock,
        sleep=clock.sleep,
    )


@pytest.mark.usefixtures("loose_umask")
async def test_a_new_data_folder_and_everything_in_it_is_owner_only(tmp_path: Path) -> None:
    data_dir = tmp_path / "new" / "data"
    # One image is refused by the chat (so it is kept for /image retry), one is sent.
    chat = RecordingChat(image_failures=[ChatError("the chat refused the upload")])
    outcomes: list[JobOutcome] = []
    app = make_app(data_dir, chat, outcomes)
    await app.start()
    try:
        await app.bot.handle(IncomingMessage("chat", 1, "ann", "/image=flux=a red fox"))
        await app.bot.handle(IncomingMessage("chat", 2, "ann", "/image=flux=a blue fox"))
        await asyncio.wait_for(app.drain(), timeout=10)
    finally:
        await app.aclose()
    assert sorted(o.ok for o in outcomes) == [False, True]
    folders = [p for p in everything_under(data_dir) if p.is_dir()]
    files = [p for p in everything_under(data_dir) if p.is_file()]
    names = {p.relative_to(data_dir).as_posix() for p in files}
    assert "sakaibot.db" in names
    assert any(name.startswith("images/") for name in names)
    assert any(name.startswith("undelivered/") and name.endswith(".json") for name in names)
    assert {p.name for p in folders} == {"data", "images", "undelivered"}
    assert {str(p): mode(p) for p in folders} == dict.fromkeys(map(str, folders), 0o700)
    assert {str(p): mode(p) for p in files} == dict.fromkeys(map(str, files), 0o600)


@pytest.mark.usefixtures("loose_umask")
async def test_a_looser_data_folder_is_tightened_at_start_with_one_log_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data_dir = tmp_path / "data"
    (data_dir / "images").mkdir(parents=True)
    (data_dir / "undelivered").mkdir()
    loose = {
        data_dir / "sakaibot.session": 0o644,
        data_dir / "images" / f"{'a' * 64}.jpg": 0o664,
        data_dir / "undelivered" / "j1.json": 0o666,
        data_dir / "frontend-id": 0o640,
    }
    for path, loose_mode in loose.items():
        path.write_bytes(b"x")
        path.chmod(loose_mode)
    already_private = data_dir / "notes.txt"
    already_private.write_bytes(b"x")
    already_private.chmod(0o400)
    for folder in (data_dir, data_dir / "images", data_dir / "undelivered"):
        folder.chmod(0o755)
    app = make_app(data_dir, RecordingChat(), [])
    with caplog.at_level(logging.WARNING, logger="sakaibot.private_files"):
        await app.start()
    await app.aclose()
    for path in [*loose, data_dir / "sakaibot.db"]:
        assert mode(path) == 0o600, path
    assert mode(already_private) == 0o400  # narrowed only, never widened
    for folder in (data_dir, data_dir / "images", data_dir / "undelivered"):
        assert mode(folder) == 0o700, folder
    [line] = [r.getMessage() for r in caplog.records if r.name == "sakaibot.private_files"]
    assert line.startswith("data folder: narrowed to owner-only access (folders 0700, files 0600)")
    for path in [*loose, data_dir, data_dir / "images"]:
        assert str(path) in line
    assert str(already_private) not in line
    # A second start finds nothing to change, and says nothing.
    caplog.clear()
    assert tighten(data_dir) == []
    assert not caplog.records


def test_symbolic_links_are_left_alone(tmp_path: Path) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_bytes(b"x")
    outside.chmod(0o644)
    data_dir = tmp_path / "data"
    make_private_dir(data_dir)
    (data_dir / "link").symlink_to(outside)
    assert tighten(data_dir) == []
    assert mode(outside) == 0o644


@pytest.mark.usefixtures("loose_umask")
def test_a_private_write_narrows_a_file_that_existed_looser(tmp_path: Path) -> None:
    path = tmp_path / "kept.json"
    path.write_bytes(b"old")
    path.chmod(0o666)
    write_private(path, b"new")
    assert path.read_bytes() == b"new"
    assert mode(path) == 0o600


@pytest.mark.usefixtures("loose_umask", "no_telegram_connections")
async def test_the_telegram_session_file_is_owner_only(tmp_path: Path) -> None:
    from sakaibot.chat.telegram import build_client

    data_dir = tmp_path / "data"
    settings = load_settings(
        env_file=None, telegram_api_id=1, telegram_api_hash="x", sakaibot_data_dir=data_dir
    )
    client = build_client(settings)
    try:
        assert mode(data_dir / "sakaibot.session") == 0o600
        assert mode(data_dir) == 0o700
    finally:
        await asyncio.wait_for(client.disconnect(), timeout=10)


@pytest.fixture
def no_telegram_connections(monkeypatch: pytest.MonkeyPatch) -> None:
    """A client built here must never try to reach Telegram."""
    from telethon import TelegramClient

    async def refuse(self: object) -> None:
        raise AssertionError("a test tried to connect to Telegram")

    monkeypatch.setattr(TelegramClient, "connect", refuse)

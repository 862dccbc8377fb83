"""``sakaibot verify``'s Telegram lines: offline session checks, and ``--telegram``.

Sessions are real Telethon sessions (files in ``tmp_path`` or strings). Nothing
connects anywhere: ``TelegramClient.connect`` is a tripwire, and the
``--telegram`` tests use a scripted client.
"""

from __future__ import annotations

import io
import os
import random
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import rsa
from telethon import TelegramClient
from telethon.crypto import AuthKey
from telethon.sessions import SQLiteSession, StringSession

from sakaibot.chat import telegram
from sakaibot.settings import Settings, load_settings
from sakaibot.verify import run_verify


@pytest.fixture(autouse=True)
def no_connections(monkeypatch: pytest.MonkeyPatch) -> None:
    async def refuse(self: Any) -> None:
        raise AssertionError("a test tried to connect to a Telegram server")

    monkeypatch.setattr(TelegramClient, "connect", refuse)


def settings_with(tmp_path: Path, **values: Any) -> Settings:
    base: dict[str, Any] = {
        "telegram_api_id": 12345,
        "telegram_api_hash": "not-a-real-hash",
        "sakaibot_data_dir": tmp_path / "data",
        "llm_provider": "none",
    }
    return load_settings(env_file=None, **{**base, **values})


def session_file(settings: Settings, *, logged_in: bool = True) -> None:
    settings.sakaibot_data_dir.mkdir(parents=True, exist_ok=True)
    session = SQLiteSession(str(settings.session_path))
    session.set_dc(2, "149.154.167.51", 443)  # production DC 2
    if logged_in:
        session.auth_key = AuthKey(os.urandom(256))
    session.save()
    session.close()


async def telegram_lines(settings: Settings, *, connect: bool = False) -> tuple[int, list[str]]:
    out = io.StringIO()
    code = await run_verify(settings, out, telegram=connect)
    lines = [line for line in out.getvalue().splitlines() if "Telegram" in line]
    return code, lines


async def test_without_telegram_settings_it_only_says_what_login_will_need(
    tmp_path: Path,
) -> None:
    settings = settings_with(tmp_path, telegram_api_id=None, telegram_api_hash=None)
    _, lines = await telegram_lines(settings)
    assert lines == [
        "– Telegram: not set up (TELEGRAM_API_ID, TELEGRAM_API_HASH); needed only by "
        "`sakaibot login` and `sakaibot run`"
    ]


async def test_half_the_app_settings_is_a_failure_naming_the_other_half(tmp_path: Path) -> None:
    settings = settings_with(tmp_path, telegram_api_hash=None)
    code, lines = await telegram_lines(settings)
    assert code == 1
    assert lines == [
        "✗ Telegram: TELEGRAM_API_HASH is not set: create an app at https://my.telegram.org "
        "(API development tools) and copy its api_hash"
    ]


async def test_before_login_it_says_to_log_in_without_failing(tmp_path: Path) -> None:
    settings = settings_with(tmp_path)
    _, lines = await telegram_lines(settings)
    session = tmp_path / "data" / "sakaibot.session"
    assert lines == [
        "✓ Telegram: TELEGRAM_API_ID and TELEGRAM_API_HASH are set",
        f"– Telegram: no session yet in {session}; log in once with `sakaibot login`",
    ]
    assert not session.exists()  # checking did not create one


async def test_a_logged_in_session_file_is_read_without_connecting(tmp_path: Path) -> None:
    settings = settings_with(tmp_path)
    session_file(settings)
    _, lines = await telegram_lines(settings)
    assert lines[1] == (
        f"✓ Telegram: session in {tmp_path}/data/sakaibot.session (DC 2); "
        "`sakaibot verify --telegram` asks Telegram which account it is"
    )


async def test_a_session_file_without_a_login_says_so(tmp_path: Path) -> None:
    settings = settings_with(tmp_path)
    session_file(settings, logged_in=False)
    _, lines = await telegram_lines(settings)
    assert lines[1].startswith("– Telegram: the session in ")
    assert lines[1].endswith("is not logged in yet; run `sakaibot login`")


async def test_a_file_that_is_not_a_session_is_a_failure(tmp_path: Path) -> None:
    settings = settings_with(tmp_path)
    settings.sakaibot_data_dir.mkdir(parents=True)
    (settings.sakaibot_data_dir / "sakaibot.session").write_text("not a session\n")
    code, lines = await telegram_lines(settings)
    assert code == 1
    assert lines[1] == (
        f"✗ Telegram: {tmp_path}/data/sakaibot.session is not a Telethon session file; "
        "move it away and log in again with `sakaibot login`"
    )


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
async def test_an_unreadable_session_file_is_a_failure_with_the_fix(tmp_path: Path) -> None:
    settings = settings_with(tmp_path)
    session_file(settings)
    path = settings.sakaibot_data_dir / "sakaibot.session"
    path.chmod(0)
    try:
        code, lines = await telegram_lines(settings)
    finally:
        path.chmod(0o600)
    assert code == 1
    assert lines[1] == (
        f"✗ Telegram: {path} cannot be read (Permission denied); let the user that runs "
        "SakaiBot read and write it"
    )


async def test_a_broken_string_session_is_a_failure_and_is_not_echoed(tmp_path: Path) -> None:
    settings = settings_with(tmp_path, telegram_session="1this-is-not-a-session")
    code, lines = await telegram_lines(settings)
    assert code == 1
    assert lines[1] == (
        "✗ Telegram: TELEGRAM_SESSION is not a Telethon string session; print a new one "
        "with `sakaibot login --string-session`"
    )


async def test_the_server_key_is_read_without_connecting(tmp_path: Path) -> None:
    n = random.Random(1).getrandbits(2048) | (1 << 2047) | 1  # only n and e are read
    good = tmp_path / "server.pem"
    good.write_bytes(rsa.PublicKey(n, 65537).save_pkcs1())
    private = tmp_path / "private.pem"
    private.write_bytes(rsa.newkeys(512)[1].save_pkcs1())
    server = "1@127.0.0.1:8443"

    _, good_lines = await telegram_lines(
        settings_with(tmp_path, telegram_server=server, telegram_server_public_key=str(good))
    )
    code, bad_lines = await telegram_lines(
        settings_with(tmp_path, telegram_server=server, telegram_server_public_key=str(private))
    )

    assert "✓ Telegram: TELEGRAM_SERVER_PUBLIC_KEY holds an RSA public key" in good_lines
    assert code == 1
    assert (
        f"✗ Telegram: TELEGRAM_SERVER_PUBLIC_KEY: {private} holds a private key; give the "
        "server's public key instead (never put a private key on the bot's machine)"
    ) in bad_lines


async def test_a_session_for_another_server_is_a_failure(tmp_path: Path) -> None:
    built = StringSession()
    built.set_dc(2, "149.154.167.40", 443)  # Telegram's test environment
    built.auth_key = AuthKey(os.urandom(256))
    settings = settings_with(tmp_path, telegram_session=built.save())
    code, lines = await telegram_lines(settings)
    assert code == 1
    assert "was made against test server DC 2" in lines[1]


class ScriptedClient:
    def __init__(self, *, authorized: bool = True) -> None:
        self.authorized = authorized
        self.disconnects = 0

    async def connect(self) -> None:
        return None

    async def is_user_authorized(self) -> bool:
        return self.authorized

    async def get_me(self) -> Any:
        return SimpleNamespace(id=9_999_621_234, username="tester", bot=False)

    async def disconnect(self) -> None:
        self.disconnects += 1


async def test_telegram_flag_says_who_the_session_is_logged_in_as(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = ScriptedClient()
    monkeypatch.setattr(telegram, "build_client", lambda settings: client)
    settings = settings_with(tmp_path)
    session_file(settings)
    _, lines = await telegram_lines(settings, connect=True)
    assert lines[-1] == (
        "✓ Telegram: logged in as @tester (id 9999621234) (user account) on production"
    )
    assert client.disconnects == 1


async def test_telegram_flag_fails_when_the_session_was_logged_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(telegram, "build_client", lambda settings: ScriptedClient(authorized=False))
    settings = settings_with(tmp_path)
    session_file(settings)
    code, lines = await telegram_lines(settings, connect=True)
    assert code == 1
    assert lines[-1] == (
        "✗ Telegram: the Telegram session is not logged in: run `sakaibot login` first"
    )


async def test_telegram_flag_without_a_session_fails_without_connecting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def never(settings: Settings) -> Any:
        raise AssertionError("no client should be built")

    monkeypatch.setattr(telegram, "build_client", never)
    code, lines = await telegram_lines(settings_with(tmp_path), connect=True)
    assert code == 1
    assert lines[-1].startswith("✗ Telegram: no session yet in ")

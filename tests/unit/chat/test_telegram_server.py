"""Telegram's test environment and self-hosted MTProto servers (``TELEGRAM_SERVER``).

Settings are parsed for real, clients are real Telethon clients on real
sessions (in memory, as strings, or as files in ``tmp_path``), and keys are
real RSA keys registered in Telethon's own key table. Nothing here connects
anywhere: ``TelegramClient.connect`` is replaced by a tripwire, and the
``login``/``run`` tests use a scripted client.
"""

from __future__ import annotations

import asyncio
import io
import logging
import os
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import rsa
import rsa.pem
from telethon import TelegramClient
from telethon.client.telegrambaseclient import DEFAULT_DC_ID, DEFAULT_IPV4_IP, DEFAULT_PORT
from telethon.crypto import AuthKey
from telethon.crypto import rsa as telethon_rsa
from telethon.sessions import MemorySession, SQLiteSession, StringSession

from sakaibot.chat import telegram
from sakaibot.chat.telegram import (
    build_client,
    check_session_server,
    export_string_session,
    server_label,
)
from sakaibot.errors import ConfigError, TelegramUnreachable
from sakaibot.settings import Settings, TelegramServer, load_settings

TEST_DC2 = "2@149.154.167.40:443"
FORMAT_PROBLEM = "is not DC_ID@HOST:PORT, e.g. 2@149.154.167.40:443 for Telegram's test environment"


def settings_with(tmp_path: Path, **values: Any) -> Settings:
    base: dict[str, Any] = {
        "telegram_api_id": 1,
        "telegram_api_hash": "x",
        "sakaibot_data_dir": tmp_path / "data",
    }
    return load_settings(env_file=None, **{**base, **values})


def problems_of(**values: Any) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_settings(env_file=None, **values)
    return info.value.problems


@pytest.fixture(autouse=True)
def no_connections(monkeypatch: pytest.MonkeyPatch) -> None:
    """Belt and braces: a client built here must never try to reach any server."""

    async def refuse(self: Any) -> None:
        raise AssertionError("a test tried to connect to a Telegram server")

    monkeypatch.setattr(TelegramClient, "connect", refuse)


@pytest.fixture(autouse=True)
def own_key_table(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keys registered by a test stay out of Telethon's table for the others."""
    monkeypatch.setattr(telethon_rsa, "_server_keys", dict(telethon_rsa._server_keys))


# -- TELEGRAM_SERVER -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected", "shown"),
    [
        (TEST_DC2, TelegramServer(2, "149.154.167.40", 443), TEST_DC2),
        ("  1@10.0.0.5:80 ", TelegramServer(1, "10.0.0.5", 80), "1@10.0.0.5:80"),
        ("1@[::1]:8443", TelegramServer(1, "::1", 8443), "1@[::1]:8443"),
        (
            "3@[2001:DB8:0:0::1]:443",
            TelegramServer(3, "2001:db8::1", 443),
            "3@[2001:db8::1]:443",
        ),
        (
            "1@MTProto.Example.org:10443",
            TelegramServer(1, "mtproto.example.org", 10443),
            "1@mtproto.example.org:10443",
        ),
        ("1000@localhost:65535", TelegramServer(1000, "localhost", 65535), None),
        ("1@local-host.:1", TelegramServer(1, "local-host", 1), "1@local-host:1"),
    ],
    ids=["test-dc", "spaces", "ipv6-loopback", "ipv6-normalised", "host-name", "edges", "fqdn"],
)
def test_telegram_server_takes_dc_host_and_port(
    value: str, expected: TelegramServer, shown: str | None
) -> None:
    settings = load_settings(env_file=None, telegram_server=value)
    assert settings.telegram_server == expected
    assert str(settings.telegram_server) == (shown or value)


def test_telegram_server_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TELEGRAM_SERVER", "1@[::1]:8443")
    settings = load_settings(env_file=None)
    assert settings.telegram_server == TelegramServer(1, "::1", 8443)
    assert settings.telegram_server.is_ipv6
    assert settings.telegram_server.is_ip


@pytest.mark.parametrize("value", ["", "   "])
def test_an_empty_telegram_server_means_production(value: str) -> None:
    settings = load_settings(env_file=None, telegram_server=value)
    assert settings.telegram_server is None
    assert server_label(settings) == "production"


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("garbage", None),
        ("2@149.154.167.40", None),  # no port
        ("149.154.167.40:443", None),  # no DC
        ("@149.154.167.40:443", None),
        ("2@:443", None),  # no host
        ("2@[::1]", None),
        ("x@1.2.3.4:443", None),
        ("2@1.2.3.4:https", None),
        ("2@1.2.3.4:443:80", None),
        ("2@::1:443", None),  # IPv6 without brackets
        ("2@exa mple.com:443", "the host is"),
        ("٢@1.2.3.4:443", None),  # digits are ASCII digits
        ("0@1.2.3.4:443", "the DC id is a number from 1 to 1000"),
        ("1001@1.2.3.4:443", "the DC id is a number from 1 to 1000"),
        ("99999999999999999999@1.2.3.4:443", "the DC id is a number from 1 to 1000"),
        ("2@1.2.3.4:0", "the port is a number from 1 to 65535"),
        ("2@1.2.3.4:70000", "the port is a number from 1 to 65535"),
        ("2@999.1.1.1:443", "the host is"),
        ("2@1.2.3:443", "the host is"),
        ("2@[1.2.3.4]:443", "the host is"),
        ("2@[nonsense]:443", "the host is"),
        ("2@-bad-.example:443", "the host is"),
        ("2@a..b:443", "the host is"),
    ],
)
def test_a_bad_telegram_server_is_one_clear_line(value: str, reason: str | None) -> None:
    problems = problems_of(telegram_server=value)
    assert len(problems) == 1
    (problem,) = problems
    assert problem.startswith(f"TELEGRAM_SERVER: {value.strip()!r} {FORMAT_PROBLEM}")
    if reason is None:
        assert problem == f"TELEGRAM_SERVER: {value.strip()!r} {FORMAT_PROBLEM}"
    else:
        assert reason in problem


def test_the_message_for_a_bad_server_is_the_documented_one() -> None:
    assert problems_of(telegram_server="2@149.154.167.40") == [
        "TELEGRAM_SERVER: '2@149.154.167.40' is not DC_ID@HOST:PORT, e.g. "
        "2@149.154.167.40:443 for Telegram's test environment"
    ]


# -- TELEGRAM_SERVER_PUBLIC_KEY ------------------------------------------------------


def public_key(seed: int, bits: int = 2048) -> rsa.PublicKey:
    """A 2048-bit public key without the slow prime search (only ``n`` and ``e`` matter)."""
    n = random.Random(seed).getrandbits(bits) | (1 << (bits - 1)) | 1
    return rsa.PublicKey(n, 65537)


def _der(tag: int, body: bytes) -> bytes:
    if len(body) < 0x80:
        length = bytes([len(body)])
    else:
        size = len(body).to_bytes((len(body).bit_length() + 7) // 8, "big")
        length = bytes([0x80 | len(size)]) + size
    return bytes([tag]) + length + body


def spki_pem(key: rsa.PublicKey) -> bytes:
    """The key as OpenSSL writes it: SubjectPublicKeyInfo, ``BEGIN PUBLIC KEY``."""
    rsa_encryption = bytes.fromhex("06092a864886f70d010101") + b"\x05\x00"
    body = _der(0x30, rsa_encryption) + _der(0x03, b"\x00" + key.save_pkcs1("DER"))
    return rsa.pem.save_pem(_der(0x30, body), "PUBLIC KEY")


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("form", ["pkcs1", "spki"])
def test_a_server_key_in_either_pem_form_is_taken(tmp_path: Path, form: str) -> None:
    key = public_key(1)
    pem = key.save_pkcs1() if form == "pkcs1" else spki_pem(key)
    path = write(tmp_path / "server.pem", b"the server's key\n" + pem)
    settings = load_settings(
        env_file=None, telegram_server="1@127.0.0.1:8443", telegram_server_public_key=str(path)
    )
    assert settings.telegram_server_public_key == path


def test_the_server_key_is_read_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path / "server.pem", public_key(1).save_pkcs1())
    monkeypatch.setenv("TELEGRAM_SERVER", "1@127.0.0.1:8443")
    monkeypatch.setenv("TELEGRAM_SERVER_PUBLIC_KEY", str(path))
    assert load_settings(env_file=None).telegram_server_public_key == path


def test_the_server_key_path_may_start_at_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    path = write(tmp_path / "server.pem", public_key(1).save_pkcs1())
    settings = load_settings(
        env_file=None, telegram_server="1@127.0.0.1:8443", telegram_server_public_key="~/server.pem"
    )
    assert settings.telegram_server_public_key == path
    # Someone else's home that does not exist here is just a file that is not there.
    problems = problems_of(
        telegram_server="1@127.0.0.1:8443",
        telegram_server_public_key="~no-such-user-sakaibot/server.pem",
    )
    assert len(problems) == 1
    assert problems[0].startswith(
        "TELEGRAM_SERVER_PUBLIC_KEY: there is no file ~no-such-user-sakaibot/server.pem;"
    )


def test_an_empty_server_key_means_none() -> None:
    settings = load_settings(env_file=None, telegram_server_public_key="")
    assert settings.telegram_server_public_key is None


def bad_key_files(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    _, private = rsa.newkeys(512)
    garbage_pem = b"-----BEGIN RSA PUBLIC KEY-----\nAAAA\n-----END RSA PUBLIC KEY-----\n"
    (tmp_path / "folder").mkdir()
    return {
        "missing": (tmp_path / "nowhere.pem", "there is no file"),
        "folder": (tmp_path / "folder", "is a folder, not a file"),
        "text": (write(tmp_path / "notes.txt", b"hello\n"), "holds no RSA public key"),
        "binary": (write(tmp_path / "b.pem", bytes(range(256))), "holds no RSA public key"),
        "broken-pem": (write(tmp_path / "c.pem", garbage_pem), "holds no RSA public key"),
        "private": (write(tmp_path / "p.pem", private.save_pkcs1()), "holds a private key"),
        "short": (write(tmp_path / "s.pem", public_key(2, 512).save_pkcs1()), "512-bit"),
        "huge": (
            write(tmp_path / "h.pem", public_key(1).save_pkcs1() + b"x" * 70_000),
            "holds no RSA public key",
        ),
    }


def bad_key_problems(tmp_path: Path, case: str) -> tuple[Path, str, list[str]]:
    """The problems a bad key file gives, where they are found: a file that is not
    there when the settings are read, one that holds no usable key when the
    Telegram adapter builds the client (before anything connects)."""
    path, expected = bad_key_files(tmp_path)[case]
    if case in ("missing", "folder"):
        problems = problems_of(telegram_server=TEST_DC2, telegram_server_public_key=str(path))
        return path, expected, problems
    settings = settings_with(
        tmp_path, telegram_server=TEST_DC2, telegram_server_public_key=str(path)
    )
    with pytest.raises(ConfigError) as info:
        build_client(settings)
    return path, expected, info.value.problems


@pytest.mark.parametrize(
    "case", ["missing", "folder", "text", "binary", "broken-pem", "private", "short", "huge"]
)
def test_a_bad_server_key_is_one_clear_line(tmp_path: Path, case: str) -> None:
    path, expected, problems = bad_key_problems(tmp_path, case)
    assert len(problems) == 1
    (problem,) = problems
    assert problem.startswith("TELEGRAM_SERVER_PUBLIC_KEY: ")
    assert expected in problem
    assert str(path) in problem  # which file
    if case in ("missing", "folder", "text", "binary", "broken-pem"):
        assert "BEGIN RSA PUBLIC KEY" in problem  # what to give instead


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root reads any file")
def test_an_unreadable_server_key_says_so(tmp_path: Path) -> None:
    path = write(tmp_path / "server.pem", public_key(1).save_pkcs1())
    path.chmod(0)
    try:
        problems = problems_of(telegram_server=TEST_DC2, telegram_server_public_key=str(path))
    finally:
        path.chmod(0o600)
    assert problems == [
        f"TELEGRAM_SERVER_PUBLIC_KEY: {path} cannot be read (permission denied); let the "
        f"user that runs SakaiBot read it, e.g. chmod 644 {path}"
    ]


def test_a_server_key_that_cannot_be_read_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same as above, for a test run as root (who can read a chmod 000 file)."""
    path = write(tmp_path / "server.pem", public_key(1).save_pkcs1())
    real_open = Path.open

    def refuse(self: Path, *args: Any, **kwargs: Any) -> Any:
        if self == path:
            raise PermissionError(13, "Permission denied", str(self))
        return real_open(self, *args, **kwargs)

    monkeypatch.setattr(Path, "open", refuse)
    problems = problems_of(telegram_server=TEST_DC2, telegram_server_public_key=str(path))
    assert problems == [
        f"TELEGRAM_SERVER_PUBLIC_KEY: {path} cannot be read (permission denied); let the "
        f"user that runs SakaiBot read it, e.g. chmod 644 {path}"
    ]


def test_a_server_key_without_a_server_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path / "server.pem", public_key(1).save_pkcs1())
    problems = problems_of(telegram_server_public_key=str(path))
    assert len(problems) == 1
    assert problems[0].startswith("TELEGRAM_SERVER_PUBLIC_KEY: is set but TELEGRAM_SERVER is not")


def test_a_bad_server_and_a_key_are_one_line_each(tmp_path: Path) -> None:
    """A key whose server is wrong is not also blamed for the missing server."""
    path = write(tmp_path / "server.pem", public_key(1).save_pkcs1())
    problems = problems_of(telegram_server="nonsense", telegram_server_public_key=str(path))
    assert len(problems) == 1
    assert problems[0].startswith("TELEGRAM_SERVER: 'nonsense'")


# -- server_label --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "label"),
    [
        (None, "production"),
        (TEST_DC2, "test server DC 2 at 149.154.167.40:443"),
        ("1@149.154.175.10:80", "test server DC 1 at 149.154.175.10:80"),
        ("1@[::1]:8443", "custom server DC 1 at [::1]:8443"),
        ("1@127.0.0.1:8443", "custom server DC 1 at 127.0.0.1:8443"),
        ("1@mtproto.example.org:10443", "custom server DC 1 at mtproto.example.org:10443"),
        ("2@149.154.167.51:443", "production server DC 2 at 149.154.167.51:443"),
        ("4@149.154.167.92:443", "Telegram server DC 4 at 149.154.167.92:443"),
    ],
)
def test_server_label_names_the_server(value: str | None, label: str) -> None:
    settings = load_settings(env_file=None, telegram_server=value)
    assert server_label(settings) == label


# -- build_client ----------------------------------------------------------------------


async def test_build_client_points_a_new_session_file_at_the_server(tmp_path: Path) -> None:
    settings = settings_with(tmp_path, telegram_server=TEST_DC2)
    client = build_client(settings)
    try:
        assert isinstance(client.session, SQLiteSession)
        assert (client.session.dc_id, client.session.server_address, client.session.port) == (
            2,
            "149.154.167.40",
            443,
        )
        assert client._use_ipv6 is False  # Telethon would otherwise reset the address
        assert client.flood_sleep_threshold == 0
    finally:
        await client.disconnect()
    # It is in the file, so a login that stops half-way still goes to the same server.
    stored = SQLiteSession(str(settings.session_path))
    try:
        assert (stored.dc_id, stored.server_address, stored.port) == (2, "149.154.167.40", 443)
    finally:
        stored.close()


async def test_build_client_points_a_new_session_at_an_ipv6_server(tmp_path: Path) -> None:
    client = build_client(settings_with(tmp_path, telegram_server="1@[::1]:8443"))
    try:
        assert (client.session.dc_id, client.session.server_address, client.session.port) == (
            1,
            "::1",
            8443,
        )
        assert client._use_ipv6 is True  # else Telethon goes back to its IPv4 default DC
    finally:
        await client.disconnect()


async def test_build_client_leaves_production_as_it_was(tmp_path: Path) -> None:
    client = build_client(settings_with(tmp_path))
    try:
        assert client.session.server_address is None  # Telethon picks its default DC
        assert client._use_ipv6 is False
    finally:
        await client.disconnect()


async def test_a_production_login_is_not_sent_to_a_server_left_from_a_half_login(
    tmp_path: Path,
) -> None:
    settings = settings_with(tmp_path)
    settings.sakaibot_data_dir.mkdir(parents=True)
    leftover = SQLiteSession(str(settings.session_path))
    leftover.set_dc(1, "127.0.0.1", 8443)  # no auth key: the login never finished
    leftover.close()
    client = build_client(settings)
    try:
        assert (client.session.dc_id, client.session.server_address, client.session.port) == (
            DEFAULT_DC_ID,
            DEFAULT_IPV4_IP,
            DEFAULT_PORT,
        )
    finally:
        await client.disconnect()


async def test_a_logged_in_test_session_stays_on_its_home_dc(tmp_path: Path) -> None:
    """Telegram moved the account to test DC 1 at login; its auth key belongs there."""
    settings = settings_with(tmp_path, telegram_server=TEST_DC2)
    settings.sakaibot_data_dir.mkdir(parents=True)
    made = SQLiteSession(str(settings.session_path))
    made.set_dc(1, "149.154.175.10", 443)
    made.auth_key = AuthKey(os.urandom(256))
    key = made.auth_key.key
    made.close()
    client = build_client(settings)
    try:
        assert (client.session.dc_id, client.session.server_address) == (1, "149.154.175.10")
        assert client.session.auth_key.key == key
    finally:
        await client.disconnect()


async def test_a_logged_in_session_follows_a_new_port_of_its_own_dc(tmp_path: Path) -> None:
    """Port 443 did not answer, so TELEGRAM_SERVER now says 80: same DC, same key."""
    settings = settings_with(tmp_path, telegram_server="2@149.154.167.40:80")
    settings.sakaibot_data_dir.mkdir(parents=True)
    made = SQLiteSession(str(settings.session_path))
    made.set_dc(2, "149.154.167.40", 443)
    made.auth_key = AuthKey(os.urandom(256))
    key = made.auth_key.key
    made.close()
    client = build_client(settings)
    try:
        assert (client.session.dc_id, client.session.server_address, client.session.port) == (
            2,
            "149.154.167.40",
            80,
        )
        assert client.session.auth_key.key == key
    finally:
        await client.disconnect()


@pytest.mark.parametrize("form", ["pkcs1", "spki"])
async def test_build_client_registers_the_server_key(tmp_path: Path, form: str) -> None:
    key = public_key(7)
    fingerprint = telethon_rsa._compute_fingerprint(key)
    assert fingerprint not in telethon_rsa._server_keys
    pem = key.save_pkcs1() if form == "pkcs1" else spki_pem(key)
    path = write(tmp_path / "server.pem", pem)
    settings = settings_with(
        tmp_path, telegram_server="1@127.0.0.1:8443", telegram_server_public_key=str(path)
    )
    known_before = set(telethon_rsa._server_keys)
    client = build_client(settings)
    try:
        assert telethon_rsa._server_keys[fingerprint] == (key, False)  # a current key
        assert set(telethon_rsa._server_keys) == known_before | {fingerprint}
    finally:
        await client.disconnect()


async def test_a_server_key_that_went_away_stops_build_client(tmp_path: Path) -> None:
    path = write(tmp_path / "server.pem", public_key(1).save_pkcs1())
    settings = settings_with(
        tmp_path, telegram_server="1@127.0.0.1:8443", telegram_server_public_key=str(path)
    )
    path.unlink()
    with pytest.raises(ConfigError) as info:
        build_client(settings)
    assert info.value.problems[0].startswith("TELEGRAM_SERVER_PUBLIC_KEY: there is no file")


def test_a_string_session_needs_an_ip_address(tmp_path: Path) -> None:
    settings = settings_with(
        tmp_path,
        telegram_server="1@mtproto.example.org:10443",
        telegram_session=logged_in("string", LOCAL_SERVER, tmp_path).save(),
    )
    with pytest.raises(ConfigError) as info:
        build_client(settings)
    (problem,) = info.value.problems
    assert problem.startswith("TELEGRAM_SERVER: a string session stores the server as an IP")
    assert "'mtproto.example.org'" in problem


async def test_a_string_session_made_on_the_test_server_exports_and_loads_again(
    tmp_path: Path,
) -> None:
    session = StringSession()
    session.set_dc(2, "149.154.167.40", 443)
    session.auth_key = AuthKey(os.urandom(256))
    text = session.save()
    settings = settings_with(tmp_path, telegram_server=TEST_DC2, telegram_session=text)
    client = build_client(settings)
    try:
        assert export_string_session(client) == text
    finally:
        await client.disconnect()


# -- a session made against another server ----------------------------------------------


@dataclass(frozen=True)
class Made:
    dc_id: int
    host: str
    port: int


def logged_in(kind: str, made: Made, tmp_path: Path) -> Any:
    """A session with an auth key made at ``made``, of Telethon's three kinds."""
    session: Any
    if kind == "memory":
        session = MemorySession()
    elif kind == "string":
        built = StringSession()
        built.set_dc(made.dc_id, made.host, made.port)
        built.auth_key = AuthKey(os.urandom(256))
        return StringSession(built.save())  # read back the way TELEGRAM_SESSION is
    else:
        session = SQLiteSession(str(tmp_path / "made"))
    session.set_dc(made.dc_id, made.host, made.port)
    session.auth_key = AuthKey(os.urandom(256))
    return session


SESSION_KINDS = ["memory", "string", "file"]
PRODUCTION_DC2 = Made(2, "149.154.167.51", 443)
PRODUCTION_DC4 = Made(4, "149.154.167.91", 443)
TEST_SERVER_DC1 = Made(1, "149.154.175.10", 443)
TEST_SERVER_DC2 = Made(2, "149.154.167.40", 443)
LOCAL_SERVER = Made(1, "127.0.0.1", 8443)


@pytest.fixture
def closing() -> Iterator[list[Any]]:
    sessions: list[Any] = []
    yield sessions
    for session in sessions:
        session.close()


@pytest.mark.parametrize("kind", SESSION_KINDS)
@pytest.mark.parametrize(
    ("made", "configured", "made_text", "configured_text"),
    [
        (
            PRODUCTION_DC2,
            "1@127.0.0.1:8443",
            "production server DC 2 at 149.154.167.51:443",
            "TELEGRAM_SERVER says custom server DC 1 at 127.0.0.1:8443",
        ),
        (
            PRODUCTION_DC4,
            TEST_DC2,
            "production server DC 4 at 149.154.167.91:443",
            "TELEGRAM_SERVER says test server DC 2 at 149.154.167.40:443",
        ),
        (
            LOCAL_SERVER,
            None,
            "custom server DC 1 at 127.0.0.1:8443",
            "TELEGRAM_SERVER is unset, which means production",
        ),
        (
            TEST_SERVER_DC1,
            None,
            "test server DC 1 at 149.154.175.10:443",
            "TELEGRAM_SERVER is unset, which means production",
        ),
        (
            LOCAL_SERVER,
            "1@10.0.0.2:8443",
            "custom server DC 1 at 127.0.0.1:8443",
            "TELEGRAM_SERVER says custom server DC 1 at 10.0.0.2:8443",
        ),
        (
            LOCAL_SERVER,
            "1@127.0.0.1:9443",
            "custom server DC 1 at 127.0.0.1:8443",
            "TELEGRAM_SERVER says custom server DC 1 at 127.0.0.1:9443",
        ),
        (
            Made(1, "::1", 8443),
            "1@127.0.0.1:8443",
            "custom server DC 1 at [::1]:8443",
            "TELEGRAM_SERVER says custom server DC 1 at 127.0.0.1:8443",
        ),
        (
            TEST_SERVER_DC2,
            "1@127.0.0.1:8443",
            "test server DC 2 at 149.154.167.40:443",
            "TELEGRAM_SERVER says custom server DC 1 at 127.0.0.1:8443",
        ),
    ],
    ids=[
        "production-to-custom",
        "production-to-test",
        "custom-to-production",
        "test-to-production",
        "custom-to-another-host",
        "custom-to-another-port",
        "custom-ipv6-to-ipv4",
        "test-to-custom",
    ],
)
def test_a_session_made_against_another_server_is_refused(
    tmp_path: Path,
    closing: list[Any],
    kind: str,
    made: Made,
    configured: str | None,
    made_text: str,
    configured_text: str,
) -> None:
    session = logged_in(kind, made, tmp_path)
    closing.append(session)
    settings = settings_with(tmp_path, telegram_server=configured)
    with pytest.raises(ConfigError) as info:
        check_session_server(session, settings)
    assert info.value.problems == [
        f"the session in {settings.session_path}.session was made against {made_text}, "
        f"but {configured_text}; log in again with `sakaibot login` using a separate "
        "SAKAIBOT_DATA_DIR (or TELEGRAM_SESSION) for each server"
    ]


@pytest.mark.parametrize("kind", SESSION_KINDS)
@pytest.mark.parametrize(
    ("made", "configured"),
    [
        (PRODUCTION_DC2, None),
        (PRODUCTION_DC4, None),  # Telegram moved the account to its home DC
        (Made(2, "2001:67c:4e8:f002::a", 443), None),
        (Made(4, "149.154.167.92", 443), None),  # in Telegram's network
        (TEST_SERVER_DC2, TEST_DC2),
        (TEST_SERVER_DC1, TEST_DC2),  # a test account whose home is test DC 1
        (Made(4, "149.154.167.92", 443), TEST_DC2),  # cannot be told apart: let it be
        (LOCAL_SERVER, "1@127.0.0.1:8443"),
        (Made(1, "::1", 8443), "1@[0:0::1]:8443"),
        (PRODUCTION_DC2, "2@149.154.167.51:443"),  # production, named explicitly
    ],
    ids=[
        "production",
        "production-home-dc",
        "production-ipv6",
        "production-unlisted-address",
        "test",
        "test-home-dc",
        "unlisted-address-on-test",
        "custom",
        "custom-ipv6",
        "production-explicit",
    ],
)
def test_a_session_made_against_the_configured_server_is_fine(
    tmp_path: Path, closing: list[Any], kind: str, made: Made, configured: str | None
) -> None:
    session = logged_in(kind, made, tmp_path)
    closing.append(session)
    check_session_server(session, settings_with(tmp_path, telegram_server=configured))


@pytest.mark.parametrize("configured", [None, TEST_DC2, "1@127.0.0.1:8443"])
def test_a_session_not_logged_in_yet_may_go_anywhere(
    tmp_path: Path, closing: list[Any], configured: str | None
) -> None:
    session = SQLiteSession(str(tmp_path / "fresh"))
    closing.append(session)
    settings = settings_with(tmp_path, telegram_server=configured)
    check_session_server(session, settings)  # no address, no key
    session.set_dc(1, "10.9.8.7", 443)
    check_session_server(session, settings)  # an address, still no key
    check_session_server(StringSession(), settings)


def test_the_message_names_telegram_session_for_a_string_session(tmp_path: Path) -> None:
    text = logged_in("string", LOCAL_SERVER, tmp_path).save()
    settings = settings_with(tmp_path, telegram_session=text)
    with pytest.raises(ConfigError, match=r"^the session in TELEGRAM_SESSION was made against"):
        check_session_server(StringSession(text), settings)


async def test_build_client_refuses_a_session_file_of_another_server_and_keeps_it(
    tmp_path: Path,
) -> None:
    settings = settings_with(tmp_path, telegram_server=TEST_DC2)
    settings.sakaibot_data_dir.mkdir(parents=True)
    made = logged_in("file", PRODUCTION_DC2, tmp_path)
    made.close()
    move(Path(made.filename), Path(f"{settings.session_path}.session"))
    with pytest.raises(ConfigError, match="was made against production server DC 2"):
        build_client(settings)
    # The production session is untouched: it still works without TELEGRAM_SERVER.
    stored = SQLiteSession(str(settings.session_path))
    try:
        assert (stored.dc_id, stored.server_address, stored.port) == (2, "149.154.167.51", 443)
        assert stored.auth_key is not None
    finally:
        stored.close()
    client = build_client(settings_with(tmp_path))
    await client.disconnect()


def move(source: Path, target: Path) -> None:
    source.rename(target)


def test_build_client_refuses_a_string_session_of_another_server(tmp_path: Path) -> None:
    text = logged_in("string", TEST_SERVER_DC2, tmp_path).save()
    with pytest.raises(ConfigError, match="TELEGRAM_SERVER is unset, which means production"):
        build_client(settings_with(tmp_path, telegram_session=text))


# -- what login and run say ------------------------------------------------------------


class ScriptedClient:
    """Stands in for a connected client; ``login`` and ``run`` see only these calls."""

    def __init__(self, *, connect_error: BaseException | None = None) -> None:
        self.connect_error = connect_error
        self.me = SimpleNamespace(id=9_999_621_234, username="tester", bot=False)
        self.disconnects = 0

    async def connect(self) -> None:
        if self.connect_error is not None:
            raise self.connect_error

    async def start(self, **kwargs: Any) -> None:
        return None

    async def is_user_authorized(self) -> bool:
        return True

    async def get_me(self) -> Any:
        return self.me

    def add_event_handler(self, *args: Any) -> None:
        return None

    def remove_event_handler(self, *args: Any) -> None:
        return None

    @property
    def disconnected(self) -> asyncio.Future[None]:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)  # the connection "drops" at once: run stops cleanly
        return done

    async def disconnect(self) -> None:
        self.disconnects += 1


async def test_login_says_which_server_it_logs_in_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = ScriptedClient()
    monkeypatch.setattr(telegram, "build_client", lambda settings, **_: client)
    out = io.StringIO()
    await telegram.login(
        settings_with(tmp_path, telegram_server=TEST_DC2), out, bot_token="123:abc"
    )
    lines = out.getvalue().splitlines()
    assert lines[0] == "Logging in on test server DC 2 at 149.154.167.40:443."
    assert lines[1] == (
        "Logged in as @tester (id 9999621234) (user account) on test server DC 2 at "
        "149.154.167.40:443."
    )
    assert client.disconnects == 1


async def test_login_refuses_a_string_session_for_a_host_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def never(settings: Settings, **_: Any) -> Any:
        raise AssertionError("no client should be built")

    monkeypatch.setattr(telegram, "build_client", never)
    settings = settings_with(tmp_path, telegram_server="1@mtproto.example.org:10443")
    with pytest.raises(ConfigError, match="string session stores the server as an IP"):
        await telegram.login(settings, io.StringIO(), bot_token=None, string_session=True)


async def test_run_says_which_server_it_runs_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(telegram, "build_client", lambda settings: ScriptedClient())
    settings = settings_with(
        tmp_path, telegram_server="1@127.0.0.1:8443", flux_worker_url="http://127.0.0.1:9/flux"
    )
    out = io.StringIO()
    with caplog.at_level(logging.INFO, logger="sakaibot.chat.telegram"):
        assert await telegram.run(settings, out) == 0
    assert out.getvalue().splitlines()[0] == (
        "SakaiBot is running as @tester (id 9999621234) (userbot) on custom server DC 1 at "
        "127.0.0.1:8443; models: flux. Ctrl-C stops it."
    )
    assert any(
        record.getMessage().startswith("running as @tester")
        and "on custom server DC 1 at 127.0.0.1:8443;" in record.getMessage()
        for record in caplog.records
    )


async def test_run_names_the_server_it_could_not_reach(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = ScriptedClient(connect_error=ConnectionRefusedError())
    monkeypatch.setattr(telegram, "build_client", lambda settings, **_: client)
    settings = settings_with(
        tmp_path, telegram_server=TEST_DC2, flux_worker_url="http://127.0.0.1:9/flux"
    )
    with pytest.raises(TelegramUnreachable) as info:
        await telegram.run(settings, io.StringIO())
    assert "ConnectionRefusedError from test server DC 2 at 149.154.167.40:443" in str(info.value)

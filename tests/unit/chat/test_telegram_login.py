"""``sakaibot login``: every way it can fail is one clear line, and nothing is left behind.

The client is a real Telethon client on a real session file; only what it
would send over the wire is answered, by :class:`ScriptedTelegram`. So
Telethon's own ``send_code_request``, ``sign_in`` (code, and the two-step
password through real SRP) and ``get_me`` run, and raise Telethon's own error
classes. Nothing connects anywhere.
"""

from __future__ import annotations

import datetime
import io
import logging
import os
import secrets
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from telethon import TelegramClient, errors
from telethon import password as srp
from telethon.crypto import AuthKey
from telethon.sessions import StringSession
from telethon.tl import functions, types

from sakaibot import cli
from sakaibot.chat import telegram
from sakaibot.chat.telegram import BAD_STRING_SESSION, TELETHON_LOGGER, build_client
from sakaibot.errors import ConfigError, LoginFailed, TelegramUnreachable
from sakaibot.settings import Settings, load_settings

PHONE = "+999 66 2 1234"  # a number of Telegram's test environment's shape, not a real one
PHONE_DIGITS = "9996621234"
CODE = "22222"
TWO_STEP = "correct horse battery staple"
ACCOUNT = types.User(
    id=9_999_621_234, is_self=True, access_hash=1, username="tester", first_name="Tess"
)
BOT = types.User(id=4_000_004, is_self=True, bot=True, access_hash=2, username="sakai_bot")
BOT_TOKEN = "4000004:AAE-scripted-token"
CONNECTING = "Connecting to 149.154.167.51:443/TcpFull..."

#: The 2048-bit safe prime Telegram uses for two-step verification (MTProto's SRP).
GOOD_PRIME = bytes.fromhex(
    "c71caeb9c6b1c9048e6c522f70f13f73980d40238e3e21c14934d037563d930f"
    "48198a0aa7c14058229493d22530f4dbfa336f6e0ac925139543aed44cce7c37"
    "20fd51f69458705ac68cd4fe6b6b13abdc9746512969328454f18faf8c595f64"
    "2477fe96bb2a941d5bcd1d4ac8cc49880708fa9b378e3c4f3a9060bee67cf9a4"
    "a4a695811051907e162753b56b0f6b410dba74d8a84b2a14b3144e0ef1284754"
    "fd17ed950d5965b4b9dd46582db1178d169c6bc465b0d6ff9ca3928fef5b9ae4"
    "e418fc15e83ebea0f87fa9ff5eed70050ded2849f47bf959d956850ce929851f"
    "0d8115f635b105ee2e4e15d04b2454bf6f4fadf034b10403119cd8e3b92fcc5b"
)


class TwoStepPassword:
    """Telegram's side of SRP: hands out ``account.Password`` and checks the proof."""

    def __init__(self, password: str) -> None:
        self.algo = types.PasswordKdfAlgoSHA256SHA256PBKDF2HMACSHA512iter100000SHA256ModPow(
            salt1=os.urandom(16), salt2=os.urandom(16), g=3, p=GOOD_PRIME
        )
        self.p = int.from_bytes(GOOD_PRIME, "big")
        x = int.from_bytes(srp.compute_hash(self.algo, password), "big")
        self.v = pow(3, x, self.p)
        k = int.from_bytes(
            srp.sha256(srp.num_bytes_for_hash(GOOD_PRIME), srp.big_num_for_hash(3)), "big"
        )
        self.b = secrets.randbelow(self.p - 2) + 2
        self.srp_b = srp.big_num_for_hash((k * self.v + pow(3, self.b, self.p)) % self.p)

    def offer(self) -> types.account.Password:
        return types.account.Password(
            new_algo=types.PasswordKdfAlgoUnknown(),
            new_secure_algo=types.SecurePasswordKdfAlgoUnknown(),
            secure_random=os.urandom(32),
            has_password=True,
            current_algo=self.algo,
            srp_B=self.srp_b,
            srp_id=7,
        )

    def accepts(self, check: types.InputCheckPasswordSRP) -> bool:
        a = int.from_bytes(check.A, "big")
        u = int.from_bytes(srp.sha256(check.A, self.srp_b), "big")
        shared = pow(a * pow(self.v, u, self.p) % self.p, self.b, self.p)
        expected = srp.sha256(
            srp.xor(
                srp.sha256(srp.num_bytes_for_hash(GOOD_PRIME)),
                srp.sha256(srp.big_num_for_hash(3)),
            ),
            srp.sha256(self.algo.salt1),
            srp.sha256(self.algo.salt2),
            check.A,
            self.srp_b,
            srp.sha256(srp.big_num_for_hash(shared)),
        )
        return bool(expected == check.M1)


class ScriptedTelegram:
    """Answers a real client's requests the way Telegram does, for one account."""

    def __init__(
        self,
        *,
        registered: bool = True,
        two_step: str | None = None,
        send_code_error: Callable[[Any], Exception] | None = None,
        sign_in_error: Callable[[Any], Exception] | None = None,
        unreachable: bool = False,
        already_logged_in: bool = False,
    ) -> None:
        self.registered = registered
        self.two_step = TwoStepPassword(two_step) if two_step is not None else None
        self.send_code_error = send_code_error
        self.sign_in_error = sign_in_error
        self.unreachable = unreachable
        self.authorized: types.User | None = ACCOUNT if already_logged_in else None
        self.requests: list[str] = []
        self.session_file_while_connected: bool | None = None
        self.client: Any = None

    def on(self, client: Any) -> Any:
        """Put this Telegram behind ``client``: its connect and its invoke."""
        self.client = client
        client.connect = self.connect
        client._call = self.call
        return client

    def building(self, build: Callable[..., Any] = build_client) -> Callable[..., Any]:
        """A ``build_client`` whose clients talk to this Telegram."""

        def build_scripted(settings: Settings, **options: Any) -> Any:
            client = self.on(build(settings, **options))
            session = getattr(client.session, "filename", None)
            self.session_file_while_connected = session is not None and Path(session).exists()
            return client

        return build_scripted

    async def connect(self) -> None:
        # What Telethon says while it connects, on the logger it says it on.
        log = self.client._log["telethon.network.mtprotosender"]
        log.info(CONNECTING)
        if self.unreachable:
            log.warning("Attempt 1 at connecting failed: ConnectionRefusedError: refused")
            raise ConnectionError("Connection to Telegram failed 1 time(s)")
        log.info("Connection to 149.154.167.51:443/TcpFull complete!")

    async def call(self, sender: Any, request: Any, ordered: bool = False, **_: Any) -> Any:
        self.requests.append(type(request).__name__)
        match request:
            case functions.updates.GetStateRequest() | functions.users.GetUsersRequest():
                if self.authorized is None:
                    raise errors.AuthKeyUnregisteredError(request)
                if isinstance(request, functions.users.GetUsersRequest):
                    return [self.authorized]
                return types.updates.State(pts=1, qts=0, date=_NOW, seq=1, unread_count=0)
            case functions.updates.GetDifferenceRequest():
                return types.updates.DifferenceEmpty(date=_NOW, seq=1)
            case functions.auth.SendCodeRequest():
                if self.send_code_error is not None:
                    raise self.send_code_error(request)
                return types.auth.SentCode(
                    type=types.auth.SentCodeTypeApp(length=5), phone_code_hash="scripted"
                )
            case functions.auth.SignInRequest():
                if self.sign_in_error is not None:
                    raise self.sign_in_error(request)
                if request.phone_code != CODE:
                    raise errors.PhoneCodeInvalidError(request)
                if not self.registered:
                    return types.auth.AuthorizationSignUpRequired()
                if self.two_step is not None:
                    raise errors.SessionPasswordNeededError(request)
                return self.authorize(ACCOUNT)
            case functions.account.GetPasswordRequest():
                assert self.two_step is not None
                return self.two_step.offer()
            case functions.auth.CheckPasswordRequest():
                assert self.two_step is not None
                if not self.two_step.accepts(request.password):
                    raise errors.PasswordHashInvalidError(request)
                return self.authorize(ACCOUNT)
            case functions.auth.ImportBotAuthorizationRequest():
                if request.bot_auth_token != BOT_TOKEN:
                    raise errors.AccessTokenInvalidError(request)
                return self.authorize(BOT)
        raise AssertionError(f"unscripted request {type(request).__name__}")

    def authorize(self, user: types.User) -> types.auth.Authorization:
        self.authorized = user
        return types.auth.Authorization(user=user)


_NOW = datetime.datetime(2025, 1, 1, tzinfo=datetime.UTC)


def answers(*lines: str) -> Callable[[str], str]:
    """Types ``lines`` at the prompts, one each; then the input ends, as at Ctrl-D."""
    queue = list(lines)

    def ask(prompt: str) -> str:
        if not queue:
            raise EOFError
        return queue.pop(0)

    return ask


def settings_with(tmp_path: Path, **values: Any) -> Settings:
    base: dict[str, Any] = {
        "telegram_api_id": 1,
        "telegram_api_hash": "x",
        "sakaibot_data_dir": tmp_path / "data",
    }
    return load_settings(env_file=None, **{**base, **values})


def session_file(tmp_path: Path) -> Path:
    return tmp_path / "data" / "sakaibot.session"


@pytest.fixture(autouse=True)
def no_connections(monkeypatch: pytest.MonkeyPatch) -> None:
    """Belt and braces: a client not handed to a ScriptedTelegram must not connect."""

    async def refuse(self: Any) -> None:
        raise AssertionError("a test tried to connect to Telegram")

    monkeypatch.setattr(TelegramClient, "connect", refuse)


@pytest.fixture(autouse=True)
def telethon_log_level() -> Iterator[None]:
    """``sakaibot login`` quiets the ``telethon`` logger for its process; not for the next test."""
    logger = logging.getLogger("telethon")
    level = logger.level
    yield
    logger.setLevel(level)


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """Everything logged at INFO and above, as the CLI's default LOG_LEVEL shows it."""
    with caplog.at_level(logging.INFO):
        yield caplog


def telethon_lines(logs: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in logs.records if r.name.startswith(TELETHON_LOGGER)]


async def log_in(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    telegram_side: ScriptedTelegram,
    *typed: str,
    secrets_typed: tuple[str, ...] = (),
    bot_token: str | None = None,
    verbose: bool = False,
    out: io.StringIO | None = None,
) -> str:
    """Run ``login``; returns what it printed (LoginFailed and friends propagate)."""
    monkeypatch.setattr(telegram, "build_client", telegram_side.building())
    out = out or io.StringIO()
    await telegram.login(
        settings_with(tmp_path),
        out,
        bot_token=bot_token,
        verbose=verbose,
        ask=answers(*typed),
        ask_secret=answers(*secrets_typed),
    )
    return out.getvalue()


# -- logging in ----------------------------------------------------------------------


async def test_a_login_with_a_code_saves_the_session_and_says_who(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, logs: pytest.LogCaptureFixture
) -> None:
    side = ScriptedTelegram()
    out = await log_in(tmp_path, monkeypatch, side, PHONE, f" {CODE} ")
    assert out.splitlines() == [
        "Logging in on production.",
        "Logged in as @tester (id 9999621234) (user account) on production.",
        f"Session saved in {tmp_path / 'data' / 'sakaibot'}.session",
        "Start the bot with: sakaibot run",
    ]
    assert session_file(tmp_path).is_file()
    assert telethon_lines(logs) == []
    assert side.requests.count("SendCodeRequest") == 1


async def test_two_step_verification_asks_again_after_a_wrong_password(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, logs: pytest.LogCaptureFixture
) -> None:
    side = ScriptedTelegram(two_step=TWO_STEP)
    out = await log_in(
        tmp_path, monkeypatch, side, PHONE, CODE, secrets_typed=("wrong", f"{TWO_STEP}")
    )
    assert out.splitlines()[1:3] == [
        "That password is not right. 2 tries left.",
        "Logged in as @tester (id 9999621234) (user account) on production.",
    ]
    assert side.requests.count("CheckPasswordRequest") == 2
    assert session_file(tmp_path).is_file()
    assert telethon_lines(logs) == []


async def test_an_account_already_logged_in_is_not_asked_anything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    side = ScriptedTelegram(already_logged_in=True)
    out = await log_in(tmp_path, monkeypatch, side)  # nothing typed: asking would fail
    assert "Logged in as @tester" in out
    assert "SendCodeRequest" not in side.requests


async def test_a_bot_token_logs_in_as_a_bot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = await log_in(tmp_path, monkeypatch, ScriptedTelegram(), bot_token=BOT_TOKEN)
    assert "Logged in as @sakai_bot (id 4000004) (bot account) on production." in out


# -- each failure: one line, nothing left behind ---------------------------------------

NO_FILE_LEFT = "the failed login left its session file behind"


async def expect_failure(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    side: ScriptedTelegram,
    *typed: str,
    secrets_typed: tuple[str, ...] = (),
    bot_token: str | None = None,
    out: io.StringIO | None = None,
) -> str:
    """Log in, expect a failure; returns its one line after the common checks."""
    with pytest.raises((LoginFailed, TelegramUnreachable)) as info:
        await log_in(
            tmp_path,
            monkeypatch,
            side,
            *typed,
            secrets_typed=secrets_typed,
            bot_token=bot_token,
            out=out,
        )
    assert side.session_file_while_connected, "the login should have had a session file"
    assert not session_file(tmp_path).exists(), NO_FILE_LEFT
    message = info.value.user_message
    assert "\n" not in message
    assert "Traceback" not in message
    return message


async def test_a_number_with_no_account_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, logs: pytest.LogCaptureFixture
) -> None:
    side = ScriptedTelegram(registered=False)
    message = await expect_failure(tmp_path, monkeypatch, side, PHONE, CODE)
    assert message == (
        f"Telegram has no account with the number +{PHONE_DIGITS}. Check the number, or create "
        "the account in an official Telegram app first (SakaiBot cannot sign up), then run "
        "`sakaibot login` again."
    )
    assert telethon_lines(logs) == []


async def test_telegram_refusing_to_send_a_code_to_a_number_without_account_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    side = ScriptedTelegram(send_code_error=errors.PhoneNumberUnoccupiedError)
    message = await expect_failure(tmp_path, monkeypatch, side, PHONE)
    assert message.startswith(f"Telegram has no account with the number +{PHONE_DIGITS}.")


async def test_a_wrong_code_three_times_stops_with_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, logs: pytest.LogCaptureFixture
) -> None:
    side, out = ScriptedTelegram(), io.StringIO()
    message = await expect_failure(
        tmp_path, monkeypatch, side, PHONE, "11111", "", "33333", out=out
    )
    assert message == (
        "The login code was wrong 3 times, so the login stopped. Run `sakaibot login` again "
        "and type the code from Telegram's newest message."
    )
    assert out.getvalue().splitlines()[1:] == [
        "That code is not right. 2 tries left.",
        "That code is not right. 1 try left.",
    ]
    # The empty answer never reached Telegram (Telethon would have sent a new code).
    assert side.requests.count("SignInRequest") == 2
    assert side.requests.count("SendCodeRequest") == 1
    assert telethon_lines(logs) == []


async def test_a_wrong_two_step_password_three_times_stops_with_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    side = ScriptedTelegram(two_step=TWO_STEP)
    message = await expect_failure(
        tmp_path, monkeypatch, side, PHONE, CODE, secrets_typed=("a", " " + TWO_STEP, "c")
    )
    assert message.startswith(
        "The two-step verification password was wrong 3 times, so the login stopped. "
        "Run `sakaibot login` again; a forgotten password can be reset"
    )
    assert side.requests.count("CheckPasswordRequest") == 3  # spaces belong to a password


async def test_an_expired_code_stops_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    side = ScriptedTelegram(sign_in_error=errors.PhoneCodeExpiredError)
    message = await expect_failure(tmp_path, monkeypatch, side, PHONE, CODE, CODE)
    assert message.startswith("The login code has expired")
    assert side.requests.count("SignInRequest") == 1


async def test_what_is_not_a_phone_number_is_asked_again_then_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    side, out = ScriptedTelegram(send_code_error=errors.PhoneNumberInvalidError), io.StringIO()
    message = await expect_failure(tmp_path, monkeypatch, side, "my phone", "+1", "+1 555", out=out)
    assert message == (
        "Telegram does not take '+1 555' as a phone number. Write it in international format, "
        "+ and the country code first (e.g. +44...), and run `sakaibot login` again."
    )
    assert out.getvalue().splitlines()[1] == (
        "Telegram does not take that as a phone number. 2 tries left."
    )
    assert side.requests.count("SendCodeRequest") == 2  # "my phone" never left


async def test_no_network_says_so_in_one_line_without_telethons_chatter(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, logs: pytest.LogCaptureFixture
) -> None:
    side = ScriptedTelegram(unreachable=True)
    message = await expect_failure(tmp_path, monkeypatch, side)
    assert message == (
        "Could not reach Telegram (ConnectionError from production). Check the network "
        "connection (and TELEGRAM_SERVER, if you set it), then run `sakaibot login` again."
    )
    assert telethon_lines(logs) == []


async def test_login_asks_telethon_for_one_retry_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    side = ScriptedTelegram()
    await log_in(tmp_path, monkeypatch, side, PHONE, CODE)
    assert side.client._connection_retries == telegram.LOGIN_CONNECTION_RETRIES == 1


async def test_verbose_shows_telethons_lines(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, logs: pytest.LogCaptureFixture
) -> None:
    await log_in(tmp_path, monkeypatch, ScriptedTelegram(), PHONE, CODE, verbose=True)
    assert CONNECTING in telethon_lines(logs)
    # And the quiet is only for the login: the level is back as it was.
    assert logging.getLogger(TELETHON_LOGGER).level == logging.NOTSET


async def test_input_that_ends_stops_the_login(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    message = await expect_failure(tmp_path, monkeypatch, ScriptedTelegram(), PHONE)
    assert message.startswith("The input ended before the login was finished.")


async def test_a_bad_bot_token_says_where_to_get_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    message = await expect_failure(
        tmp_path, monkeypatch, ScriptedTelegram(), bot_token="4000004:wrong"
    )
    assert message.startswith("Telegram did not accept the bot token. Copy it again")


async def test_a_flood_wait_says_how_long(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    side = ScriptedTelegram(send_code_error=lambda request: errors.FloodWaitError(request, 300))
    message = await expect_failure(tmp_path, monkeypatch, side, PHONE)
    assert message.startswith("Telegram asks to wait 5 min before the next login attempt")


async def test_an_app_telegram_refuses_is_a_settings_problem(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    side = ScriptedTelegram(send_code_error=errors.ApiIdInvalidError)
    with pytest.raises(ConfigError, match="TELEGRAM_API_ID and TELEGRAM_API_HASH"):
        await log_in(tmp_path, monkeypatch, side, PHONE)
    assert not session_file(tmp_path).exists(), NO_FILE_LEFT


async def test_any_other_refusal_names_telegrams_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    side = ScriptedTelegram(send_code_error=errors.PhoneNumberBannedError)
    message = await expect_failure(tmp_path, monkeypatch, side, PHONE)
    assert message.startswith(f"Telegram has banned the number +{PHONE_DIGITS}")
    side = ScriptedTelegram(send_code_error=errors.AuthRestartError)
    message = await expect_failure(tmp_path, monkeypatch, side, PHONE)
    assert message.startswith("Telegram refused the login (AuthRestartError).")


async def test_a_failed_login_keeps_a_session_file_that_was_there_before(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    session_file(tmp_path).parent.mkdir(parents=True)
    build_client(settings_with(tmp_path)).session.close()  # an earlier, unfinished login
    assert session_file(tmp_path).is_file()
    side = ScriptedTelegram(registered=False)
    with pytest.raises(LoginFailed):
        await log_in(tmp_path, monkeypatch, side, PHONE, CODE)
    assert session_file(tmp_path).is_file()


# -- malformed string sessions ---------------------------------------------------------


def valid_string_session() -> str:
    session = StringSession()
    session.set_dc(2, "149.154.167.51", 443)
    session.auth_key = AuthKey(bytes(range(256)))
    return str(session.save())


@pytest.mark.parametrize(
    "text",
    [
        "garbage",
        "1garbage",
        "1AAAA",
        valid_string_session()[:-10],
        valid_string_session() + "AAAA",
        "2" + valid_string_session()[1:],
    ],
    ids=["word", "version-only", "too-short", "cut", "extended", "version"],
)
def test_a_malformed_string_session_is_one_settings_line(tmp_path: Path, text: str) -> None:
    with pytest.raises(ConfigError) as info:
        build_client(settings_with(tmp_path, telegram_session=text))
    assert info.value.problems == [BAD_STRING_SESSION]
    assert text not in info.value.user_message  # a secret, even when broken


@pytest.mark.usefixtures("no_connections")
async def test_a_string_session_with_spaces_around_it_is_taken(tmp_path: Path) -> None:
    text = valid_string_session()
    client = build_client(settings_with(tmp_path, telegram_session=f"  {text}\n"))
    try:
        assert client.session.dc_id == 2
    finally:
        await client.disconnect()


@pytest.mark.parametrize("command", [["login"], ["login", "--string-session"], ["run"]])
def test_the_cli_says_a_malformed_telegram_session_in_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], command: list[str]
) -> None:
    monkeypatch.setenv("TELEGRAM_API_ID", "1")
    monkeypatch.setenv("TELEGRAM_API_HASH", "x")
    monkeypatch.setenv("TELEGRAM_SESSION", "1AAAA-not-a-session")
    monkeypatch.setenv("FLUX_WORKER_URL", "http://127.0.0.1:9/flux")
    code = cli.main(["--env-file", "none", *command], out=sys.stdout)
    err = capsys.readouterr().err
    assert code == cli.EXIT_CONFIG
    assert err == f"SakaiBot is not configured correctly:\n- {BAD_STRING_SESSION}\n"


# -- through the command line ----------------------------------------------------------


def test_the_cli_prints_one_line_and_exits_1_after_three_wrong_codes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TELEGRAM_API_ID", "1")
    monkeypatch.setenv("TELEGRAM_API_HASH", "x")
    monkeypatch.setenv("SAKAIBOT_DATA_DIR", str(tmp_path / "data"))
    side = ScriptedTelegram()
    monkeypatch.setattr(telegram, "build_client", side.building())
    monkeypatch.setattr(sys, "stdin", io.StringIO(f"{PHONE}\n1\n2\n3\n"))
    code = cli.main(["--env-file", "none", "login"], out=io.StringIO())
    err = capsys.readouterr().err
    assert code == cli.EXIT_FAILED
    assert err == (
        "The login code was wrong 3 times, so the login stopped. Run `sakaibot login` again "
        "and type the code from Telegram's newest message.\n"
    )
    assert not session_file(tmp_path).exists(), NO_FILE_LEFT

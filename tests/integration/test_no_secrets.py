"""Canary secrets: no key, hash, token or session ever shows anywhere.

Every secret setting gets a unique canary value; jobs then fail in every way
that touches a secret (a worker refusing the key, LLM providers answering
401/500, a worker that is not there, a chat that raises), with everything
logged at DEBUG, and no canary may appear in a log line, a traceback, a chat
message, an outcome, the settings' own renderings, the data folder, or the
output of ``sakaibot chat --local`` run as a process.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from sakaibot.app import build_app
from sakaibot.chat.port import IncomingMessage, OutgoingImage
from sakaibot.devworker import DevWorker, DevWorkerConfig
from sakaibot.pipeline import JobOutcome
from sakaibot.settings import Settings, load_settings
from tests.support.fakes import RecordingChat

#: The key the development worker wants; every configured key is a (wrong) canary.
WORKER_KEY = "the-right-worker-key"

CANARIES: dict[str, str] = {
    "flux_api_key": "CANARY-flux-key-5d21",
    "sdxl_api_key": "CANARY-sdxl-key-7f3a",
    "openrouter_api_key": "CANARY-openrouter-key-91c2",
    "gemini_api_key": "CANARY-gemini-key-4be8",
    "telegram_api_hash": "CANARY-telegram-hash-0d5e",
    "telegram_bot_token": "CANARY-bot-token-66a1",
    "telegram_session": "CANARY-session-c3f9",
    # Nothing listens on port 1: the password may only ever be sent, never shown.
    "redis_url": "redis://:CANARY-redis-password-5e1f@127.0.0.1:1/0",
}
#: IMAGE_MODELS keys: one POST model (refused: wrong key), one GET model (answers).
EXTRA_POST_KEY = "CANARY-image-models-post-key-2a7d"
EXTRA_GET_KEY = "CANARY-image-models-get-key-8e0b"
ALL_CANARIES = (*CANARIES.values(), EXTRA_POST_KEY, EXTRA_GET_KEY)
#: What every canary starts with, so a partly leaked one is found too.
CANARY_PREFIX = "CANARY-"

LOGGERS = ("", "sakaibot", "httpx", "httpcore", "httpx2", "httpcore2", "openai", "asyncio")


def test_every_secret_setting_has_a_canary() -> None:
    secret_fields = {
        name for name, info in Settings.model_fields.items() if "SecretStr" in str(info.annotation)
    }
    assert secret_fields == set(CANARIES)


@pytest.fixture(scope="module")
def worker() -> Iterator[DevWorker]:
    dev = DevWorker(DevWorkerConfig(api_key=WORKER_KEY))
    dev.start()
    yield dev
    dev.stop()


def closed_port() -> int:
    """A loopback port nobody listens on (connections are refused)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def image_models(worker_url: str) -> str:
    return json.dumps(
        {
            "mine": {"contract": "post", "url": f"{worker_url}/sdxl", "api_key": EXTRA_POST_KEY},
            "okgen": {"contract": "get", "url": f"{worker_url}/flux", "api_key": EXTRA_GET_KEY},
        }
    )


def canary_settings(worker_url: str) -> Settings:
    # The jobs run in one process; Redis gets a test of its own below.
    in_process = {name: value for name, value in CANARIES.items() if name != "redis_url"}
    return load_settings(
        env_file=None,
        **in_process,
        telegram_api_id=12345,
        llm_provider="openrouter",
        openrouter_base_url=f"{worker_url}/v1",
        gemini_base_url=f"{worker_url}/v1",
        enhancer_timeout_s=5,
        flux_worker_url=f"http://127.0.0.1:{closed_port()}/flux",
        sdxl_worker_url=f"{worker_url}/sdxl",
        image_models=image_models(worker_url),
        image_user_limits="off",
        cache_ttl_s=0,
        status_edit_interval_s=0,
        worker_connect_timeout_s=1,
        worker_read_timeout_s=2,
        # One real retry wait (about 1-2 s): the retry path is logged too.
        worker_max_attempts=2,
        worker_retry_budget_s=10,
        log_level="DEBUG",
    )


class ExplodingChat(RecordingChat):
    """A chat whose image upload fails with an unexpected error (a traceback is logged)."""

    async def send_image(self, chat_id: str, image: OutgoingImage, *, reply_to: int | None) -> int:
        raise RuntimeError("the chat library blew up while uploading")


def assert_no_canary(where: str, text: str) -> None:
    for canary in ALL_CANARIES:
        assert canary not in text, f"{canary} leaked into {where}"
    assert CANARY_PREFIX not in text, f"part of a canary leaked into {where}"


def assert_no_canary_on_disk(folder: Path) -> None:
    """Nothing written under ``folder`` (the store, kept images) holds a canary."""
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            data = path.read_bytes()
            for canary in ALL_CANARIES:
                assert canary.encode() not in data, f"{canary} was written to {path}"


def formatted_tracebacks(records: list[logging.LogRecord]) -> list[str]:
    formatter = logging.Formatter()
    texts: list[str] = []
    for record in records:
        if record.exc_info:
            texts.append(formatter.formatException(record.exc_info))
        if record.exc_text:
            texts.append(record.exc_text)
        if record.stack_info:
            texts.append(record.stack_info)
    return texts


JOBS = [
    # Both LLM providers refuse their key; flux is not there at all (connection refused).
    ("u1", "/image=flux=a red fox [llm:401]"),
    # Both LLM providers fail; the SDXL worker refuses the (canary) key: 401.
    ("u2", "/image=sdxl=a lighthouse [llm:500]"),
    # An IMAGE_MODELS POST worker refuses its key too.
    ("u3", "/image=mine=a dog [llm:429]"),
    # The image is made, but the chat raises while uploading it.
    ("u4", "/image=okgen=a cat [llm:ok]"),
    # A GET worker with a key answering text instead of an image.
    ("u5", "/image=okgen=a bird [llm:garbage] [fault:text]"),
]


async def test_no_canary_leaks_through_failing_jobs(
    worker: DevWorker, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    for name in LOGGERS:
        caplog.set_level(logging.DEBUG, logger=name)
    settings = canary_settings(worker.url)
    # The canaries really are configured (and so could leak).
    assert settings.sdxl_api_key is not None
    assert settings.sdxl_api_key.get_secret_value() == CANARIES["sdxl_api_key"]
    extra = settings.image_models["mine"].api_key
    assert isinstance(extra, SecretStr)
    assert extra.get_secret_value() == EXTRA_POST_KEY

    chat = ExplodingChat()
    outcomes: list[JobOutcome] = []
    served_before = len(worker.served)
    app = build_app(settings, chat, on_outcome=outcomes.append)
    await app.start()
    try:
        for message_id, (user, text) in enumerate(JOBS, start=1):
            await app.bot.handle(IncomingMessage("chat", message_id, user, text))
        await asyncio.wait_for(app.drain(), timeout=25)
    finally:
        await app.aclose()

    # Every failure path really ran.
    kinds = {o.reply_to: o.error_kind for o in outcomes}
    assert kinds == {
        1: "worker_unavailable",
        2: "worker_auth",
        3: "worker_auth",
        4: "internal",
        5: "invalid_image",
    }
    served = worker.served[served_before:]
    llm_faults = [what for path, what in served if path == "/v1/chat/completions"]
    # Two providers per job (OpenRouter, then Gemini), except the one that answered.
    assert sorted(llm_faults) == sorted(
        ["401"] * 2 + ["500"] * 2 + ["429"] * 2 + ["ok"] + ["garbage"] * 2
    )
    assert ("/sdxl", "refused:401") in served
    assert any(record.exc_info for record in caplog.records), "no traceback was logged"

    assert_no_canary("the log", caplog.text)
    for record in caplog.records:
        assert_no_canary(f"log record {record.name}", record.getMessage())
        assert_no_canary(f"log record args of {record.name}", repr(record.args))
    for index, trace in enumerate(formatted_tracebacks(caplog.records)):
        assert_no_canary(f"traceback {index}", trace)
    for event in chat.events:
        assert_no_canary(f"chat {event.kind} {event.message_id}", event.text)
    for outcome in outcomes:
        assert_no_canary(f"outcome {outcome.reply_to}", outcome.error or "")
        assert_no_canary(f"outcome {outcome.reply_to}", repr(outcome))
    assert_no_canary("repr(settings)", repr(settings))
    assert_no_canary("str(settings)", str(settings))
    assert_no_canary("settings.model_dump_json()", settings.model_dump_json())
    assert_no_canary("settings.model_dump()", repr(settings.model_dump()))
    assert_no_canary_on_disk(tmp_path)


def test_chat_local_process_prints_no_canary(worker: DevWorker, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k.lower() not in Settings.model_fields}
    env.update({name.upper(): value for name, value in CANARIES.items() if name != "redis_url"})
    env.update(
        {
            "TELEGRAM_API_ID": "12345",
            "LLM_PROVIDER": "openrouter",
            # Both providers are the module's stand-in LLM: nothing leaves loopback.
            "OPENROUTER_BASE_URL": f"{worker.url}/v1",
            "GEMINI_BASE_URL": f"{worker.url}/v1",
            "ENHANCER_TIMEOUT_S": "5",
            "IMAGE_MODELS": image_models(worker.url),
            "STATUS_EDIT_INTERVAL_S": "0",
            "WORKER_MAX_ATTEMPTS": "1",
            "SAKAIBOT_DATA_DIR": str(tmp_path / "data"),
        }
    )
    commands = "\n".join(
        [
            "/image=flux=a red fox [llm:401]",
            "/image=sdxl=a lighthouse [llm:500]",
            "/image=mine=a dog [llm:ok]",
            "/image=okgen=a cat [llm:429] [fault:text]",
            "/image=flux=a robot [fault:401]",
        ]
    )
    served_before = len(worker.served)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "sakaibot",
            "--env-file",
            "none",
            "-v",
            "chat",
            "--local",
            "--jsonl",
            "--out",
            str(tmp_path / "out"),
        ],
        input=commands + "\n",
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert_no_canary("stdout", done.stdout)
    assert_no_canary("stderr", done.stderr)
    # The jobs really ran, and the canary keys really were sent (and refused).
    results = [json.loads(line) for line in done.stdout.splitlines() if '"type": "result"' in line]
    assert len(results) == 5
    served = worker.served[served_before:]
    assert ("/sdxl", "refused:401") in served
    assert any(path == "/v1/chat/completions" and what == "401" for path, what in served)
    assert "DEBUG" in done.stderr  # -v really logged at DEBUG


async def test_an_unreachable_redis_never_shows_its_password(
    caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    from sakaibot.app import build_app
    from sakaibot.errors import StoreUnavailable

    caplog.set_level(logging.DEBUG)
    settings = load_settings(
        env_file=None,
        redis_url=CANARIES["redis_url"],
        flux_worker_url="http://127.0.0.1:9/flux",
        sakaibot_data_dir=tmp_path / "data",
    )
    app = build_app(settings, RecordingChat())
    with pytest.raises(StoreUnavailable) as info:
        await app.start()
    await app.aclose()
    assert "127.0.0.1:1" in str(info.value)
    assert_no_canary("the error", f"{info.value} {info.value.user_message}")
    assert_no_canary("the log", caplog.text)

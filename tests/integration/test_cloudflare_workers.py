"""The shipped ``cloudflare/`` worker, unchanged, in workerd, driven by the bot's own client.

workerd runs the scripts with a fake Workers AI binding
(``tests/support/workerd/fake_ai.js``) that returns fixed images and throws the
real error shapes when the prompt carries a marker (``[[filter]]``,
``[[capacity]]``, ...). Everything goes over 127.0.0.1. Without workerd (see
``make workerd``) these tests skip, except under ``CI=true``.
"""

from __future__ import annotations

import io
import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace

import httpx
import pytest
from PIL import Image
from pydantic import SecretStr

from sakaibot.errors import (
    ContentFiltered,
    QuotaExhausted,
    WorkerAuthError,
    WorkerBadRequest,
    WorkerGaveUp,
)
from sakaibot.generation import GenerationParams
from sakaibot.models import ModelSpec
from sakaibot.settings import Settings, load_settings
from sakaibot.verify import run_verify
from sakaibot.workers.client import WorkerClient, build_http_client
from tests.support.workerd_server import WorkerdServer

TOKEN = "cf-test-token-4f9a0c2e-never-real"
FLUX_SIZE = (48, 32)
SDXL_SIZE = (64, 40)
MAX_ATTEMPTS = 3


def _encode(fmt: str, size: tuple[int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (200, 80, 20)).save(buffer, fmt)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerdServer]:
    server = WorkerdServer(
        tmp_path_factory.mktemp("workerd"),
        token=TOKEN,
        jpeg=_encode("JPEG", FLUX_SIZE),
        png=_encode("PNG", SDXL_SIZE),
    )
    with server:
        yield server


def _settings(worker: WorkerdServer) -> Settings:
    return load_settings(
        env_file=None,
        flux_worker_url=f"{worker.url}/flux",
        flux_api_key=TOKEN,
        sdxl_worker_url=f"{worker.url}/sdxl",
        sdxl_api_key=TOKEN,
        llm_provider="none",
    )


def _model(worker: WorkerdServer, name: str) -> ModelSpec:
    model = _settings(worker).model_registry().get(name)
    assert model is not None
    return model


class RecordedSleep:
    """The retry's sleep: records what it was asked to wait, and returns at once."""

    def __init__(self) -> None:
        self.waits_s: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits_s.append(seconds)


@pytest.fixture
def sleep() -> RecordedSleep:
    return RecordedSleep()


@pytest.fixture
async def client(sleep: RecordedSleep) -> AsyncIterator[WorkerClient]:
    http = build_http_client(connect_timeout_s=5.0, read_timeout_s=10.0)
    try:
        yield WorkerClient(
            http,
            max_image_bytes=1_000_000,
            retry_budget_s=120.0,
            max_attempts=MAX_ATTEMPTS,
            sleep=sleep,
        )
    finally:
        await http.aclose()


@pytest.fixture
async def raw() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10.0) as http:
        yield http


async def test_flux_answers_jpeg_bytes(worker: WorkerdServer, client: WorkerClient) -> None:
    image = await client.fetch_image(
        _model(worker, "flux"), GenerationParams(prompt="a red fox", steps=4, seed=7)
    )
    assert image.data.startswith(b"\xff\xd8\xff")
    assert (image.mime_type, image.width, image.height) == ("image/jpeg", *FLUX_SIZE)


async def test_sdxl_answers_png_bytes(worker: WorkerdServer, client: WorkerClient) -> None:
    params = GenerationParams(
        prompt="a red fox", negative_prompt="blur", width=1344, height=768, steps=20, seed=1
    )
    image = await client.fetch_image(_model(worker, "sdxl"), params)
    assert image.data.startswith(b"\x89PNG\r\n\x1a\n")
    assert (image.mime_type, image.width, image.height) == ("image/png", *SDXL_SIZE)


async def test_the_bots_options_reach_the_model(
    worker: WorkerdServer, raw: httpx.AsyncClient
) -> None:
    """The fake answers `[[inputs]]` with what the model got (as a 502's details)."""
    auth = {"Authorization": f"Bearer {TOKEN}"}
    flux = await raw.get(
        f"{worker.url}/flux",
        params={"prompt": "[[inputs]] fox", "steps": "3", "seed": "9", "width": "512"},
        headers=auth,
    )
    sdxl = await raw.post(
        f"{worker.url}/sdxl",
        json={"prompt": "[[inputs]] fox", "negative_prompt": "blur", "width": 832, "num_steps": 12},
        headers=auth,
    )
    assert flux.status_code == sdxl.status_code == 502
    flux_inputs = json.loads(flux.json()["details"].removeprefix("inputs "))
    sdxl_inputs = json.loads(sdxl.json()["details"].removeprefix("inputs "))
    # flux-1-schnell takes no size: width is accepted and not forwarded.
    assert flux_inputs == {"prompt": "[[inputs]] fox", "steps": 3, "seed": 9}
    assert sdxl_inputs == {
        "prompt": "[[inputs]] fox",
        "negative_prompt": "blur",
        "width": 832,
        "num_steps": 12,
    }


@pytest.mark.parametrize("name", ["flux", "sdxl"])
@pytest.mark.parametrize("key", [None, "not-the-token"], ids=["missing", "wrong"])
async def test_a_missing_or_wrong_token_is_refused(
    worker: WorkerdServer, client: WorkerClient, name: str, key: str | None
) -> None:
    model = replace(_model(worker, name), api_key=SecretStr(key) if key else None)
    result = await client.generate(model, GenerationParams(prompt="a red fox"))
    assert not result.success
    assert isinstance(result.error, WorkerAuthError)
    assert "HTTP 401" in result.error.detail
    assert "FLUX_API_KEY or SDXL_API_KEY" in result.error.user_message


async def test_the_401_is_json(worker: WorkerdServer, raw: httpx.AsyncClient) -> None:
    answer = await raw.post(f"{worker.url}/sdxl", json={"prompt": "a fox"})
    assert answer.status_code == 401
    assert answer.headers["content-type"].startswith("application/json")
    assert answer.json()["error"].startswith("Unauthorized")


async def test_flux_takes_the_token_in_the_query(
    worker: WorkerdServer, client: WorkerClient
) -> None:
    flux = _model(worker, "flux")
    by_query = replace(flux, url=f"{worker.url}/flux?token={TOKEN}", api_key=None)
    wrong_query = replace(flux, url=f"{worker.url}/flux?token=nope", api_key=None)
    image = await client.fetch_image(by_query, GenerationParams(prompt="a red fox"))
    assert image.mime_type == "image/jpeg"
    refused = await client.generate(wrong_query, GenerationParams(prompt="a red fox"))
    assert isinstance(refused.error, WorkerAuthError)


@pytest.mark.parametrize(
    ("method", "path", "request_input", "says"),
    [
        ("GET", "/flux", {}, "Prompt is required"),
        (
            "GET",
            "/flux",
            {"prompt": "fox", "steps": "9"},
            "steps must be a whole number from 1 to 8",
        ),
        ("GET", "/flux", {"prompt": "fox", "seed": "-1"}, "seed must be a whole number"),
        ("GET", "/flux", {"prompt": "x" * 2049}, "at most 2048"),
        ("POST", "/sdxl", {"prompt": " "}, "Prompt is required"),
        ("POST", "/sdxl", {"prompt": "fox", "width": 100}, "width must be a whole number from 256"),
        ("POST", "/sdxl", {"prompt": "fox", "height": 4096}, "height must be a whole number"),
        ("POST", "/sdxl", {"prompt": "fox", "num_steps": 21}, "num_steps must be a whole number"),
        ("POST", "/sdxl", {"prompt": "x" * 2049}, "at most 2048"),
    ],
)
async def test_bad_input_is_a_400_that_says_what_is_wrong(
    worker: WorkerdServer,
    raw: httpx.AsyncClient,
    method: str,
    path: str,
    request_input: dict[str, object],
    says: str,
) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    if method == "GET":
        answer = await raw.get(f"{worker.url}{path}", params=request_input, headers=auth)
    else:
        answer = await raw.post(f"{worker.url}{path}", json=request_input, headers=auth)
    assert answer.status_code == 400
    assert says in answer.json()["error"]


async def test_the_bot_reports_a_bad_input_without_retrying(
    worker: WorkerdServer, client: WorkerClient, sleep: RecordedSleep
) -> None:
    result = await client.generate(_model(worker, "flux"), GenerationParams(prompt="a", steps=9))
    assert isinstance(result.error, WorkerBadRequest)
    assert "steps must be a whole number from 1 to 8" in result.error.detail
    assert sleep.waits_s == []


@pytest.mark.parametrize("name", ["flux", "sdxl"])
async def test_a_filtered_prompt_is_the_content_filtered_outcome(
    worker: WorkerdServer, client: WorkerClient, sleep: RecordedSleep, name: str
) -> None:
    result = await client.generate(_model(worker, name), GenerationParams(prompt="[[filter]] x"))
    assert isinstance(result.error, ContentFiltered)
    assert sleep.waits_s == []  # never retried


async def test_capacity_is_a_503_whose_retry_after_the_bot_honours(
    worker: WorkerdServer, client: WorkerClient, sleep: RecordedSleep, raw: httpx.AsyncClient
) -> None:
    answer = await raw.post(
        f"{worker.url}/sdxl",
        json={"prompt": "[[capacity]] a fox"},
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    assert answer.status_code == 503
    retry_after_s = float(answer.headers["retry-after"])
    assert retry_after_s > 0
    # Out of capacity on the first call only: the bot waits, asks again, gets the image.
    image = await client.fetch_image(
        _model(worker, "sdxl"), GenerationParams(prompt="[[capacity-once]] a fox")
    )
    assert image.mime_type == "image/png"
    assert len(sleep.waits_s) == 1
    assert sleep.waits_s[0] >= retry_after_s


async def test_a_used_up_daily_allocation_is_a_429_naming_the_quota(
    worker: WorkerdServer, client: WorkerClient, sleep: RecordedSleep, raw: httpx.AsyncClient
) -> None:
    answer = await raw.get(f"{worker.url}/flux", params={"prompt": "[[quota]] fox", "token": TOKEN})
    assert answer.status_code == 429
    assert "daily free allocation of 10,000 neurons" in answer.json()["error"]
    result = await client.generate(_model(worker, "flux"), GenerationParams(prompt="[[quota]] x"))
    assert isinstance(result.error, QuotaExhausted)
    assert sleep.waits_s == []  # waiting does not bring it back today


async def test_any_other_error_is_a_502_that_never_carries_the_token(
    worker: WorkerdServer, client: WorkerClient, raw: httpx.AsyncClient
) -> None:
    """The fake's `[[crash]]` error echoes the token; the worker must not pass it on."""
    answer = await raw.get(
        f"{worker.url}/flux",
        params={"prompt": "[[crash]] fox"},
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    assert answer.status_code == 502
    assert answer.json()["error"] == "Workers AI failed to generate the image"
    assert TOKEN not in answer.text
    assert "***" in answer.json()["details"]
    result = await client.generate(_model(worker, "sdxl"), GenerationParams(prompt="[[crash]]"))
    assert isinstance(result.error, WorkerGaveUp)
    assert result.error.attempts == MAX_ATTEMPTS
    assert TOKEN not in result.error.detail
    assert TOKEN not in worker.log_tail()


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [("GET", "/", 404), ("POST", "/flux", 405), ("GET", "/sdxl", 405)],
)
async def test_wrong_paths_and_methods_are_json(
    worker: WorkerdServer, raw: httpx.AsyncClient, method: str, path: str, status: int
) -> None:
    answer = await raw.request(
        method, f"{worker.url}{path}", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    assert answer.status_code == status
    assert "/flux" in answer.json()["error"] or "/sdxl" in answer.json()["error"]


async def test_verify_passes_against_the_shipped_worker(worker: WorkerdServer) -> None:
    out = io.StringIO()
    code = await run_verify(_settings(worker), out)
    lines = out.getvalue().splitlines()
    assert code == 0, lines
    assert "✓ worker flux: 48×32 JPG" in "\n".join(lines)
    assert "✓ worker sdxl: 64×40 PNG" in "\n".join(lines)
    assert lines[-1] == "All checks passed."


async def test_verify_names_a_wrong_flux_key(worker: WorkerdServer) -> None:
    settings = _settings(worker).model_copy(update={"flux_api_key": SecretStr("nope")})
    out = io.StringIO()
    code = await run_verify(settings, out)
    assert code == 1
    assert "✗ worker flux: worker_auth: HTTP 401: Unauthorized: wrong token" in out.getvalue()
    assert "nope" not in out.getvalue()

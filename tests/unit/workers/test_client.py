"""WorkerClient against a scripted worker behind httpx.MockTransport; time is faked."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import httpx
import pytest
from PIL import Image
from pydantic import SecretStr

from sakaibot.devworker import DevWorker, DevWorkerConfig
from sakaibot.errors import (
    ContentFiltered,
    GenerationError,
    ImageTooLarge,
    InvalidImage,
    PermanentWorkerError,
    QuotaExhausted,
    TransientWorkerError,
    WorkerAuthError,
    WorkerBadRequest,
    WorkerGaveUp,
    WorkerTimeout,
)
from sakaibot.generation import GenerationParams
from sakaibot.models import Contract, ModelSpec
from sakaibot.workers.client import WorkerClient, build_http_client, parse_retry_after

API_KEY = "sk-test-SECRET-bearer-0123456789"
PROMPT = "a very private prompt about my cat"
FLUX = ModelSpec(name="flux", contract=Contract.GET, url="https://flux.example.workers.dev/")
SDXL = ModelSpec(
    name="sdxl",
    contract=Contract.POST,
    url="https://sdxl.example.workers.dev/",
    api_key=SecretStr(API_KEY),
)

Step = Callable[[httpx.Request], httpx.Response]


def _encode(fmt: str, size: tuple[int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (10, 120, 200)).save(buffer, fmt)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def jpeg() -> bytes:
    return _encode("JPEG", (8, 6))


@pytest.fixture(scope="module")
def png() -> bytes:
    return _encode("PNG", (6, 8))


class FakeTime:
    """A clock that only moves when someone sleeps (or a request takes time)."""

    def __init__(self) -> None:
        self.now = 1_000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


class Worker:
    """A scripted worker: each request gets the next step; the last one repeats."""

    def __init__(self, time: FakeTime) -> None:
        self.time = time
        self.steps: list[Step] = []
        self.requests: list[httpx.Request] = []
        self.request_duration_s = 0.0

    def script(self, *steps: Step) -> None:
        self.steps = list(steps)

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        self.time.now += self.request_duration_s
        step = self.steps.pop(0) if len(self.steps) > 1 else self.steps[0]
        return step(request)

    @property
    def calls(self) -> int:
        return len(self.requests)


def reply(
    status: int,
    *,
    content: bytes = b"",
    json_body: Any = None,
    headers: dict[str, str] | None = None,
) -> Step:
    def step(request: httpx.Request) -> httpx.Response:
        if json_body is not None:
            return httpx.Response(status, json=json_body, headers=headers)
        return httpx.Response(status, content=content, headers=headers)

    return step


def image(data: bytes, content_type: str = "image/jpeg") -> Step:
    return reply(200, content=data, headers={"Content-Type": content_type})


def fail(exc: Exception) -> Step:
    def step(request: httpx.Request) -> httpx.Response:
        raise exc

    return step


class Harness:
    def __init__(self) -> None:
        self.time = FakeTime()
        self.worker = Worker(self.time)
        self.http = httpx.AsyncClient(transport=httpx.MockTransport(self.worker.handle))

    def client(
        self,
        *,
        max_image_bytes: int = 1_000_000,
        retry_budget_s: float = 300.0,
        max_attempts: int = 4,
    ) -> WorkerClient:
        return WorkerClient(
            self.http,
            max_image_bytes=max_image_bytes,
            retry_budget_s=retry_budget_s,
            max_attempts=max_attempts,
            sleep=self.time.sleep,
            clock=self.time.clock,
        )


@pytest.fixture
async def harness() -> AsyncIterator[Harness]:
    h = Harness()
    yield h
    await h.http.aclose()


PARAMS = GenerationParams(prompt=PROMPT)


# --- success paths -------------------------------------------------------------


async def test_get_contract_returns_jpeg(harness: Harness, jpeg: bytes) -> None:
    harness.worker.script(image(jpeg))
    result = await harness.client().fetch_image(FLUX, PARAMS)
    assert (result.mime_type, result.extension, result.width, result.height) == (
        "image/jpeg",
        ".jpg",
        8,
        6,
    )
    assert result.data == jpeg
    (request,) = harness.worker.requests
    assert request.method == "GET"
    assert dict(request.url.params) == {"prompt": PROMPT}
    assert request.headers["user-agent"]  # httpx's default; the app's client sets SakaiBot/...


async def test_get_contract_returns_png(harness: Harness, png: bytes) -> None:
    harness.worker.script(image(png, "image/png"))
    result = await harness.client().fetch_image(FLUX, PARAMS)
    assert (result.mime_type, result.extension, result.width, result.height) == (
        "image/png",
        ".png",
        6,
        8,
    )


async def test_get_sends_only_the_parameters_that_are_set(harness: Harness, jpeg: bytes) -> None:
    harness.worker.script(image(jpeg))
    params = GenerationParams(prompt="fox & hound = friends", seed=42, steps=4, width=None)
    await harness.client().fetch_image(FLUX, params)
    assert dict(harness.worker.requests[0].url.params) == {
        "prompt": "fox & hound = friends",
        "seed": "42",
        "steps": "4",
    }


async def test_existing_query_in_the_url_is_kept(harness: Harness, jpeg: bytes) -> None:
    model = ModelSpec(
        name="flux", contract=Contract.GET, url="https://flux.example.workers.dev/gen?token=abc"
    )
    harness.worker.script(image(jpeg))
    await harness.client().fetch_image(model, GenerationParams(prompt="cat", width=512))
    url = harness.worker.requests[0].url
    assert url.path == "/gen"
    assert dict(url.params) == {"token": "abc", "prompt": "cat", "width": "512"}


async def test_get_model_with_a_key_and_a_negative_prompt(harness: Harness, jpeg: bytes) -> None:
    """An operator's GET model may take --neg and need a bearer too."""
    model = ModelSpec(
        name="dream",
        contract=Contract.GET,
        url="https://dream.example.workers.dev/",
        api_key=SecretStr("dream-key"),
        options=frozenset({"neg"}),
    )
    harness.worker.script(image(jpeg))
    await harness.client().fetch_image(model, GenerationParams(prompt="cat", negative_prompt="dog"))
    request = harness.worker.requests[0]
    assert dict(request.url.params) == {"prompt": "cat", "negative_prompt": "dog"}
    assert request.headers["authorization"] == "Bearer dream-key"


@pytest.mark.parametrize("claimed", ["image/png", "image/webp", "application/octet-stream", ""])
async def test_extension_follows_the_bytes_not_the_header(
    harness: Harness, jpeg: bytes, claimed: str
) -> None:
    harness.worker.script(image(jpeg, claimed))
    result = await harness.client().fetch_image(FLUX, PARAMS)
    assert (result.mime_type, result.extension) == ("image/jpeg", ".jpg")


async def test_json_base64_image_is_accepted(harness: Harness, jpeg: bytes) -> None:
    harness.worker.script(reply(200, json_body={"image": base64.b64encode(jpeg).decode()}))
    result = await harness.client().fetch_image(FLUX, PARAMS)
    assert result.data == jpeg
    assert result.extension == ".jpg"


async def test_raw_workers_ai_json_with_data_url_is_accepted(harness: Harness, png: bytes) -> None:
    encoded = "data:image/png;base64," + base64.encodebytes(png).decode()  # with newlines
    body = {"result": {"image": encoded}, "success": True, "errors": [], "messages": []}
    harness.worker.script(reply(200, json_body=body))
    result = await harness.client().fetch_image(FLUX, PARAMS)
    assert result.data == png
    assert result.mime_type == "image/png"


async def test_post_contract_sends_bearer_and_json(harness: Harness, png: bytes) -> None:
    harness.worker.script(image(png, "image/png"))
    params = GenerationParams(
        prompt=PROMPT, negative_prompt="blurry", width=1024, height=768, seed=7, steps=20
    )
    result = await harness.client().fetch_image(SDXL, params)
    assert result.extension == ".png"
    (request,) = harness.worker.requests
    assert request.method == "POST"
    assert str(request.url) == "https://sdxl.example.workers.dev/"
    assert request.headers["authorization"] == f"Bearer {API_KEY}"
    assert request.headers["content-type"] == "application/json"
    assert json.loads(request.content) == {
        "prompt": PROMPT,
        "negative_prompt": "blurry",
        "width": 1024,
        "height": 768,
        "num_steps": 20,
        "seed": 7,
    }


async def test_post_without_key_and_defaults_sends_just_the_prompt(
    harness: Harness, png: bytes
) -> None:
    model = ModelSpec(name="open", contract=Contract.POST, url="https://open.example/")
    harness.worker.script(image(png, "image/png"))
    await harness.client().fetch_image(model, GenerationParams(prompt="cat"))
    (request,) = harness.worker.requests
    assert "authorization" not in request.headers
    assert json.loads(request.content) == {"prompt": "cat"}


# --- 200 that is not an image ----------------------------------------------------


async def test_200_text_plain_is_invalid_image(harness: Harness) -> None:
    harness.worker.script(
        reply(200, content=b"Please provide a prompt", headers={"Content-Type": "text/plain"})
    )
    with pytest.raises(InvalidImage) as caught:
        await harness.client().fetch_image(FLUX, PARAMS)
    assert "Please provide a prompt" in caught.value.detail
    assert caught.value.model == "flux"
    assert harness.worker.calls == 1


async def test_200_image_type_with_html_bytes_is_invalid_image(harness: Harness) -> None:
    body = b"<!DOCTYPE html><title>Worker threw exception</title>" + b"x" * 2000
    harness.worker.script(reply(200, content=body, headers={"Content-Type": "image/jpeg"}))
    with pytest.raises(InvalidImage) as caught:
        await harness.client().fetch_image(FLUX, PARAMS)
    assert "Worker threw exception" in caught.value.detail
    assert len(caught.value.detail) < 600
    assert harness.worker.calls == 1


@pytest.mark.parametrize(
    "body",
    [
        {"success": True},
        {"image": "!!! not base64 !!!"},
        {"image": base64.b64encode(b"plain text, not an image").decode()},
    ],
)
async def test_json_without_a_usable_image_is_invalid_image(
    harness: Harness, body: dict[str, Any]
) -> None:
    harness.worker.script(reply(200, json_body=body))
    with pytest.raises(InvalidImage):
        await harness.client().fetch_image(FLUX, PARAMS)


async def test_204_is_invalid_image(harness: Harness) -> None:
    harness.worker.script(reply(204))
    with pytest.raises(InvalidImage):
        await harness.client().fetch_image(FLUX, PARAMS)


# --- permanent errors: never retried --------------------------------------------


@pytest.mark.parametrize(
    ("status", "body", "error_type", "detail_part"),
    [
        (401, {"error": "Unauthorized"}, WorkerAuthError, "HTTP 401: Unauthorized"),
        (403, {"error": "Forbidden"}, WorkerAuthError, "Forbidden"),
        (405, {"error": "Not allowed"}, WorkerBadRequest, "HTTP 405: Not allowed"),
        (400, {"error": "Prompt is required"}, WorkerBadRequest, "Prompt is required"),
        (
            413,
            {"errors": [{"code": 3006, "message": "Request too large"}]},
            WorkerBadRequest,
            "3006",
        ),
        (422, {"error": "width must be <= 2048"}, WorkerBadRequest, "2048"),
        (404, {"error": "Not found"}, WorkerBadRequest, "404"),
        (400, {"error": "NSFW content detected"}, ContentFiltered, "NSFW"),
        (
            500,
            {"error": "Failed to generate image", "details": "Input flagged by Safety checker"},
            ContentFiltered,
            "Failed to generate image: Input flagged by Safety checker",
        ),
        (
            429,
            {"errors": [{"code": 3036, "message": "Capacity temporarily exceeded"}]},
            QuotaExhausted,
            "3036",
        ),
        (
            429,
            {"error": "you have used up your daily free allocation of 10,000 neurons"},
            QuotaExhausted,
            "daily free allocation",
        ),
        (500, {"error": "AiError: 3036: daily free allocation"}, QuotaExhausted, "3036"),
        (302, {}, WorkerBadRequest, "redirect"),
    ],
)
async def test_permanent_errors_are_typed_and_not_retried(
    harness: Harness,
    status: int,
    body: dict[str, Any],
    error_type: type[PermanentWorkerError],
    detail_part: str,
) -> None:
    headers = {"Location": "https://elsewhere.example/"} if status == 302 else None
    harness.worker.script(reply(status, json_body=body, headers=headers))
    with pytest.raises(error_type) as caught:
        await harness.client().fetch_image(SDXL, PARAMS)
    assert type(caught.value) is error_type
    assert detail_part in caught.value.detail
    assert caught.value.model == "sdxl"
    assert harness.worker.calls == 1
    assert harness.time.sleeps == []


async def test_plain_text_error_body_is_used_and_truncated(harness: Harness) -> None:
    harness.worker.script(reply(400, content=b"bad request " + b"y" * 5000))
    with pytest.raises(WorkerBadRequest) as caught:
        await harness.client().fetch_image(FLUX, PARAMS)
    assert caught.value.detail.startswith("HTTP 400: bad request y")
    assert len(caught.value.detail) <= 320


# --- transient errors: retried ----------------------------------------------------


async def test_capacity_429_is_retried_then_succeeds(harness: Harness, jpeg: bytes) -> None:
    harness.worker.script(
        reply(429, json_body={"errors": [{"code": 3040, "message": "Out of capacity"}]}),
        image(jpeg),
    )
    result = await harness.client().fetch_image(FLUX, PARAMS)
    assert result.extension == ".jpg"
    assert harness.worker.calls == 2
    assert len(harness.time.sleeps) == 1
    assert 1.0 <= harness.time.sleeps[0] <= 2.0  # first backoff: about a second


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (408, {"errors": [{"code": 3007, "message": "Timeout"}]}),
        (500, {"error": "Failed to generate image", "details": "InferenceUpstreamError"}),
        (500, {"error": "Failed to generate image", "details": "3040: out of capacity"}),
        (502, {}),
        (503, {}),
        (504, {}),
        (524, {}),
    ],
)
async def test_transient_statuses_are_retried(
    harness: Harness, jpeg: bytes, status: int, body: dict[str, Any]
) -> None:
    harness.worker.script(reply(status, json_body=body), image(jpeg))
    await harness.client().fetch_image(FLUX, PARAMS)
    assert harness.worker.calls == 2


async def test_retry_after_seconds_is_honoured(harness: Harness, jpeg: bytes) -> None:
    harness.worker.script(reply(503, headers={"Retry-After": "7"}), image(jpeg))
    await harness.client().fetch_image(FLUX, PARAMS)
    assert len(harness.time.sleeps) == 1
    assert harness.time.sleeps[0] >= 7


async def test_retry_after_http_date_is_honoured(harness: Harness, jpeg: bytes) -> None:
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=20), usegmt=True)
    harness.worker.script(reply(429, headers={"Retry-After": when}), image(jpeg))
    await harness.client().fetch_image(FLUX, PARAMS)
    assert 15 <= harness.time.sleeps[0] <= 21


def test_parse_retry_after() -> None:
    now = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after("7", now=now) == 7.0
    assert parse_retry_after("1.5", now=now) == 1.5
    assert parse_retry_after("-3", now=now) == 0.0
    assert parse_retry_after("Wed, 01 Jan 2025 12:00:30 GMT", now=now) == 30.0
    assert parse_retry_after("Wed, 01 Jan 2025 11:00:00 GMT", now=now) == 0.0
    assert parse_retry_after("soon", now=now) is None
    assert parse_retry_after("nan", now=now) is None
    assert parse_retry_after(None) is None


async def test_backoff_grows_and_stops_at_max_attempts(harness: Harness) -> None:
    harness.worker.script(reply(502))
    with pytest.raises(WorkerGaveUp) as caught:
        await harness.client(max_attempts=4).fetch_image(FLUX, PARAMS)
    assert caught.value.attempts == 4
    assert harness.worker.calls == 4
    sleeps = harness.time.sleeps
    assert len(sleeps) == 3
    assert 1 <= sleeps[0] <= 2 <= sleeps[1] <= 3
    assert 4 <= sleeps[2] <= 5
    assert isinstance(caught.value.__cause__, TransientWorkerError)
    assert caught.value.detail == caught.value.__cause__.detail


async def test_budget_stops_retries_before_it_would_be_exceeded(harness: Harness) -> None:
    # Waits of 4 s each: 4 + 4 fit in 10 s, a third wait (>= 4 s) would not.
    harness.worker.script(reply(503, headers={"Retry-After": "4"}))
    with pytest.raises(WorkerGaveUp) as caught:
        await harness.client(retry_budget_s=10, max_attempts=10).fetch_image(FLUX, PARAMS)
    assert caught.value.attempts == 3
    assert harness.worker.calls == 3
    assert harness.time.sleeps == [4.0, 4.0]
    assert caught.value.model == "flux"
    assert "3 times" in caught.value.user_message


async def test_time_spent_in_requests_counts_against_the_budget(harness: Harness) -> None:
    harness.worker.request_duration_s = 50.0
    harness.worker.script(reply(503))
    with pytest.raises(WorkerGaveUp) as caught:
        await harness.client(retry_budget_s=120, max_attempts=10).fetch_image(FLUX, PARAMS)
    # 50 s, wait ~1 s, 50 s, wait ~2 s, 50 s: a third wait would pass 120 s.
    assert caught.value.attempts == 3
    assert harness.time.now - 1_000.0 <= 120 + 50  # the last request may end past it


async def test_retry_after_beyond_the_budget_gives_up_at_once(harness: Harness) -> None:
    harness.worker.script(reply(429, headers={"Retry-After": "3600"}))
    with pytest.raises(WorkerGaveUp) as caught:
        await harness.client(retry_budget_s=300).fetch_image(FLUX, PARAMS)
    assert caught.value.attempts == 1
    assert harness.time.sleeps == []


async def test_timeouts_are_retried_then_give_up(harness: Harness) -> None:
    harness.worker.script(fail(httpx.ReadTimeout("read timed out")))
    with pytest.raises(WorkerGaveUp) as caught:
        await harness.client(max_attempts=3).fetch_image(FLUX, PARAMS)
    error = caught.value
    assert error.attempts == 3
    assert harness.worker.calls == 3
    assert "try again" in error.user_message
    assert isinstance(error.__cause__, WorkerTimeout)
    assert isinstance(error.__cause__.__cause__, httpx.ReadTimeout)


async def test_connection_error_is_retried_then_succeeds(harness: Harness, jpeg: bytes) -> None:
    harness.worker.script(fail(httpx.ConnectError("connection refused")), image(jpeg))
    result = await harness.client().fetch_image(FLUX, PARAMS)
    assert result.data == jpeg
    assert harness.worker.calls == 2


async def test_connection_error_translated_once(harness: Harness) -> None:
    harness.worker.script(fail(httpx.ConnectError("connection refused")))
    with pytest.raises(WorkerGaveUp) as caught:
        await harness.client(max_attempts=2).fetch_image(FLUX, PARAMS)
    cause = caught.value.__cause__
    assert type(cause) is TransientWorkerError
    assert isinstance(cause.__cause__, httpx.ConnectError)
    assert "ConnectError" in cause.detail


class _ChunkStream(httpx.AsyncByteStream):
    """A body that arrives in chunks and may break off part-way."""

    def __init__(self, chunks: list[bytes], *, then_raise: Exception | None = None) -> None:
        self.chunks = chunks
        self.then_raise = then_raise
        self.yielded = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self.chunks:
            self.yielded += 1
            yield chunk
        if self.then_raise is not None:
            raise self.then_raise


async def test_body_cut_off_mid_stream_is_retried(harness: Harness, jpeg: bytes) -> None:
    broken = _ChunkStream(
        [jpeg[:10]], then_raise=httpx.RemoteProtocolError("peer closed connection")
    )
    harness.worker.script(
        lambda request: httpx.Response(200, headers={"Content-Type": "image/jpeg"}, stream=broken),
        image(jpeg),
    )
    result = await harness.client().fetch_image(FLUX, PARAMS)
    assert result.data == jpeg
    assert harness.worker.calls == 2


async def test_unexpected_exception_is_not_retried(harness: Harness) -> None:
    harness.worker.script(fail(RuntimeError("bug in a transport")))
    with pytest.raises(RuntimeError):
        await harness.client().fetch_image(FLUX, PARAMS)
    assert harness.worker.calls == 1


async def test_unsupported_scheme_is_permanent(harness: Harness) -> None:
    harness.worker.script(fail(httpx.UnsupportedProtocol("ftp is not supported")))
    with pytest.raises(WorkerBadRequest):
        await harness.client().fetch_image(FLUX, PARAMS)
    assert harness.worker.calls == 1


# --- size cap ---------------------------------------------------------------------


async def test_oversized_content_length_is_refused_before_reading(harness: Harness) -> None:
    body = _ChunkStream([b"\xff\xd8\xff" + b"\x00" * 100])
    harness.worker.script(
        lambda request: httpx.Response(
            200,
            headers={"Content-Type": "image/jpeg", "Content-Length": "5000000"},
            stream=body,
        )
    )
    with pytest.raises(ImageTooLarge) as caught:
        await harness.client(max_image_bytes=1_000_000).fetch_image(FLUX, PARAMS)
    assert (caught.value.size_bytes, caught.value.limit_bytes) == (5_000_000, 1_000_000)
    assert body.yielded == 0
    assert harness.worker.calls == 1


async def test_oversized_streamed_body_stops_at_the_cap(harness: Harness) -> None:
    body = _ChunkStream([b"\xff\xd8\xff" + b"\x00" * 997] + [b"\x00" * 1000] * 20)
    harness.worker.script(
        lambda request: httpx.Response(200, headers={"Content-Type": "image/jpeg"}, stream=body)
    )
    with pytest.raises(ImageTooLarge) as caught:
        await harness.client(max_image_bytes=2500).fetch_image(FLUX, PARAMS)
    assert caught.value.size_bytes > 2500
    assert body.yielded == 3  # stopped reading as soon as the cap was passed
    assert harness.worker.calls == 1


async def test_oversized_base64_image_is_refused(harness: Harness) -> None:
    big = b"\xff\xd8\xff" + b"\x00" * 4000
    harness.worker.script(reply(200, json_body={"image": base64.b64encode(big).decode()}))
    with pytest.raises(ImageTooLarge) as caught:
        await harness.client(max_image_bytes=2048).fetch_image(FLUX, PARAMS)
    assert caught.value.size_bytes >= 4000


async def test_image_exactly_at_the_cap_is_accepted(harness: Harness, jpeg: bytes) -> None:
    harness.worker.script(image(jpeg))
    result = await harness.client(max_image_bytes=len(jpeg)).fetch_image(FLUX, PARAMS)
    assert result.size_bytes == len(jpeg)


# --- the (success, data, error) boundary -------------------------------------------


async def test_generate_returns_the_image(harness: Harness, jpeg: bytes) -> None:
    harness.worker.script(image(jpeg))
    result = await harness.client().generate(FLUX, PARAMS)
    assert result.success is True
    assert result.data is not None
    assert result.data.extension == ".jpg"
    assert result.error is None


async def test_generate_returns_the_typed_error(harness: Harness) -> None:
    harness.worker.script(reply(401, json_body={"error": "Unauthorized"}))
    success, data, error = await harness.client().generate(SDXL, PARAMS)
    assert success is False
    assert data is None
    assert isinstance(error, WorkerAuthError)
    assert error.model == "sdxl"


async def test_generate_returns_gave_up_after_retries(harness: Harness) -> None:
    harness.worker.script(reply(503))
    result = await harness.client(max_attempts=2).generate(FLUX, PARAMS)
    assert result.success is False
    assert isinstance(result.error, WorkerGaveUp)
    assert result.error.attempts == 2


async def test_generate_turns_a_bug_into_a_generation_error(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    harness.worker.script(fail(KeyError("oops")))
    with caplog.at_level(logging.ERROR, logger="sakaibot.workers.client"):
        result = await harness.client().generate(FLUX, PARAMS)
    assert result.success is False
    assert type(result.error) is GenerationError
    assert result.error.detail == "unexpected: KeyError"
    assert result.error.model == "flux"
    assert any(record.exc_info for record in caplog.records)


# --- secrets and privacy ---------------------------------------------------------


async def test_no_key_or_prompt_in_logs_or_errors(
    harness: Harness, caplog: pytest.LogCaptureFixture, jpeg: bytes
) -> None:
    echo = f"invalid token {API_KEY}"
    harness.worker.script(
        reply(503, content=echo.encode()),
        fail(httpx.ConnectError(f"refused {API_KEY}")),
        reply(200, content=echo.encode(), headers={"Content-Type": "text/plain"}),
        reply(401, json_body={"error": "Unauthorized", "details": echo}),
        fail(ValueError("boom")),
        reply(429, json_body={"error": echo}),
    )
    client = harness.client(max_attempts=3)
    errors: list[BaseException] = []
    with caplog.at_level(logging.DEBUG):
        for _ in range(4):
            result = await client.generate(SDXL, PARAMS)
            assert result.error is not None
            errors.append(result.error)

    assert [type(e) for e in errors] == [
        InvalidImage,
        WorkerAuthError,
        GenerationError,
        WorkerGaveUp,
    ]
    for error in errors:
        chain: BaseException | None = error
        while chain is not None:
            if isinstance(chain, GenerationError):
                assert API_KEY not in chain.detail
                assert API_KEY not in chain.user_message
                assert API_KEY not in str(chain)
            chain = chain.__cause__ if isinstance(chain, GenerationError) else None
    assert caplog.records
    assert API_KEY not in caplog.text  # messages and formatted tracebacks
    for record in caplog.records:
        assert API_KEY not in record.getMessage()
        if record.name.startswith("sakaibot"):
            assert PROMPT not in record.getMessage()
            assert "prompt=" not in record.getMessage()  # never a query string


# --- deadlines: a worker that trickles its body over real loopback HTTP ------------

#: The development worker's ``trickle`` fault sends 16 pieces this far apart
#: (about 30 s in all): each pause is well inside the read timeout below, so only
#: an overall deadline can end the answer before the test's own bound.
SLOW_TRICKLE_DELAY_MS = 2000
#: How long the whole test may take: the deadlines below add up to about 1.5 s.
TRICKLE_TEST_BOUND_S = 10.0


@pytest.fixture
def slow_worker() -> Iterator[DevWorker]:
    worker = DevWorker(DevWorkerConfig(fast=True, trickle_delay_ms=SLOW_TRICKLE_DELAY_MS))
    worker.start()
    yield worker
    worker.stop()


@pytest.mark.parametrize(
    ("attempt_timeout_s", "retry_budget_s"),
    [
        (1.0, 30.0),  # the attempt's own deadline ends it
        (None, 1.0),  # no attempt deadline: the budget bounds the whole generation
    ],
)
async def test_a_trickling_worker_fails_in_bounded_time(
    slow_worker: DevWorker, attempt_timeout_s: float | None, retry_budget_s: float
) -> None:
    http = build_http_client(connect_timeout_s=1.0, read_timeout_s=5.0)
    client = WorkerClient(
        http,
        max_image_bytes=1_000_000,
        retry_budget_s=retry_budget_s,
        max_attempts=2,
        attempt_timeout_s=attempt_timeout_s,
        sleep=lambda _seconds: asyncio.sleep(0),  # no backoff between the two attempts
    )
    model = ModelSpec(name="flux", contract=Contract.GET, url=f"{slow_worker.url}/flux")
    try:
        # A third of the trickle's length: ending inside it shows a deadline ended
        # the generation (a timed assertion would flake on a busy machine).
        async with asyncio.timeout(TRICKLE_TEST_BOUND_S):
            result = await client.generate(model, GenerationParams(prompt="a fox [fault:trickle]"))
    finally:
        await http.aclose()

    assert not result.success
    assert isinstance(result.error, WorkerGaveUp)
    assert isinstance(result.error.__cause__, WorkerTimeout)
    assert "worker too slow" in result.error.detail
    assert "took too long to answer" in result.error.user_message
    assert [what for _path, what in slow_worker.served].count("trickle") >= 1


def test_attempt_timeout_must_be_positive() -> None:
    with pytest.raises(ValueError, match="attempt_timeout_s"):
        WorkerClient(
            httpx.AsyncClient(),
            max_image_bytes=1,
            retry_budget_s=1,
            max_attempts=1,
            attempt_timeout_s=0,
        )


@pytest.mark.parametrize("status", [200, 500])
async def test_deeply_nested_json_is_a_clear_error(harness: Harness, status: int) -> None:
    depth = 200_000
    nested = b"[" * depth + b"]" * depth
    harness.worker.script(
        reply(status, content=nested, headers={"Content-Type": "application/json"})
    )
    result = await harness.client(max_image_bytes=1_000_000, max_attempts=1).generate(FLUX, PARAMS)
    assert not result.success
    error = result.error
    assert error is not None
    assert not (error.kind == "worker_error" and "unexpected" in error.detail)
    if status == 200:
        assert isinstance(error, InvalidImage)
        assert "nested too deeply" in error.detail
    else:
        assert isinstance(error, WorkerGaveUp)


async def test_build_http_client_settings() -> None:
    http = build_http_client(connect_timeout_s=30, read_timeout_s=120)
    try:
        assert http.timeout == httpx.Timeout(connect=30, read=120, write=120, pool=30)
        assert http.headers["user-agent"].startswith("SakaiBot/")
        assert http.follow_redirects is False
    finally:
        await http.aclose()


async def test_a_first_attempt_that_succeeds_never_enters_the_retry_loop(
    harness: Harness, jpeg: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_retrying(*args: object, **kwargs: object) -> None:
        raise AssertionError("the retry machinery was built for a request that succeeded")

    monkeypatch.setattr("sakaibot.workers.client.AsyncRetrying", no_retrying)
    harness.worker.script(image(jpeg))
    result = await harness.client().fetch_image(FLUX, PARAMS)
    assert result.data == jpeg


async def test_a_first_failure_is_retried_and_counts_as_attempt_one(
    harness: Harness, jpeg: bytes
) -> None:
    harness.worker.script(reply(503, headers={"Retry-After": "7"}), image(jpeg))
    result = await harness.client(max_attempts=2).fetch_image(FLUX, PARAMS)
    assert result.data == jpeg
    assert harness.worker.calls == 2
    assert harness.time.sleeps == [7.0]  # the first answer's Retry-After was honoured

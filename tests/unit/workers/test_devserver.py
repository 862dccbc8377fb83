"""The development worker over real loopback HTTP: both contracts, errors, injection."""

from __future__ import annotations

import base64
import io
import json
import logging
import ssl
import threading
import time
from collections.abc import Callable, Iterator

import httpx
import openai
import pytest
from PIL import Image

from sakaibot.errors import (
    ContentFiltered,
    GenerationError,
    ImageTooLarge,
    InvalidImage,
    QuotaExhausted,
    WorkerAuthError,
    WorkerBadRequest,
    WorkerGaveUp,
)
from sakaibot.generation import GenerationParams
from sakaibot.models import Contract, ModelSpec
from sakaibot.workers.client import WorkerClient, build_http_client
from sakaibot.workers.devserver import (
    DEV_LLM_MODEL,
    DEV_LLM_SUFFIX,
    FAST_SIZE_PX,
    FAULT_NAMES,
    LLM_FAULT_NAMES,
    MAX_SIZE_PX,
    MIN_SIZE_PX,
    TRICKLE_CHUNKS,
    DevWorker,
    DevWorkerConfig,
    parse_fault,
    render_preview,
    strip_markers,
)

JPEG_MAGIC = b"\xff\xd8\xff"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
API_KEY = "dev-worker-test-key"

StartWorker = Callable[..., str]

#: Loaded once: every client here talks plain HTTP to loopback, and loading the CA
#: bundle for each new client would be most of a test's set-up time.
TLS = ssl.create_default_context()


@pytest.fixture
def start_worker() -> Iterator[StartWorker]:
    """Starts workers with the given config fields; every one is stopped afterwards."""
    workers: list[DevWorker] = []

    def start(**fields: object) -> str:
        worker = DevWorker(DevWorkerConfig(**fields))  # type: ignore[arg-type]
        workers.append(worker)
        return worker.start()

    yield start
    for worker in workers:
        worker.stop()


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10.0, verify=TLS) as http:
        yield http


def image_size(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as image:
        return image.size


def test_get_flux_answers_a_jpeg(start_worker: StartWorker, client: httpx.Client) -> None:
    url = start_worker()

    response = client.get(f"{url}/flux", params={"prompt": "a red fox in the snow"})

    assert response.status_code == 200
    assert response.headers["content-type"] == "image/jpeg"
    assert response.content.startswith(JPEG_MAGIC)
    assert image_size(response.content) == (512, 512)


def test_post_sdxl_answers_a_png(start_worker: StartWorker, client: httpx.Client) -> None:
    url = start_worker()

    response = client.post(f"{url}/sdxl", json={"prompt": "a lighthouse at dusk"})

    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"
    assert response.content.startswith(PNG_MAGIC)


def test_sdxl_requires_the_bearer_when_a_key_is_set(
    start_worker: StartWorker, client: httpx.Client
) -> None:
    url = start_worker(api_key=API_KEY)
    body = {"prompt": "a lighthouse"}

    missing = client.post(f"{url}/sdxl", json=body)
    wrong = client.post(f"{url}/sdxl", json=body, headers={"Authorization": "Bearer nope"})
    right = client.post(f"{url}/sdxl", json=body, headers={"Authorization": f"Bearer {API_KEY}"})

    assert missing.status_code == 401
    assert missing.json() == {"error": "Unauthorized"}
    assert wrong.status_code == 401
    assert right.status_code == 200
    assert right.content.startswith(PNG_MAGIC)


def test_the_key_is_checked_before_the_body(
    start_worker: StartWorker, client: httpx.Client
) -> None:
    url = start_worker(api_key=API_KEY)

    response = client.post(f"{url}/sdxl", content=b"not json")

    assert response.status_code == 401


@pytest.mark.parametrize(
    ("method", "path", "kwargs"),
    [
        ("GET", "/flux", {}),
        ("GET", "/flux", {"params": {"prompt": "   "}}),
        ("POST", "/sdxl", {"json": {}}),
        ("POST", "/sdxl", {"json": {"prompt": ""}}),
        ("POST", "/sdxl", {"json": {"prompt": 42}}),
    ],
)
def test_a_missing_prompt_is_a_400(
    start_worker: StartWorker,
    client: httpx.Client,
    method: str,
    path: str,
    kwargs: dict[str, object],
) -> None:
    url = start_worker()

    response = client.request(method, f"{url}{path}", **kwargs)  # type: ignore[arg-type]

    assert response.status_code == 400
    assert response.json() == {"error": "Prompt is required"}


@pytest.mark.parametrize("body", [b"{not json", b"[1, 2]", b"\xff\xfe"])
def test_a_bad_json_body_is_a_400(
    start_worker: StartWorker, client: httpx.Client, body: bytes
) -> None:
    url = start_worker()

    response = client.post(
        f"{url}/sdxl", content=body, headers={"Content-Type": "application/json"}
    )

    assert response.status_code == 400
    assert "error" in response.json()


def test_a_non_integer_size_is_a_400(start_worker: StartWorker, client: httpx.Client) -> None:
    url = start_worker()

    response = client.get(f"{url}/flux", params={"prompt": "a fox", "width": "wide"})

    assert response.status_code == 400
    assert response.json() == {"error": "width must be an integer"}


@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", "/flux"), ("GET", "/sdxl"), ("PUT", "/sdxl"), ("DELETE", "/flux")],
)
def test_the_wrong_method_is_a_405(
    start_worker: StartWorker, client: httpx.Client, method: str, path: str
) -> None:
    url = start_worker()

    response = client.request(method, f"{url}{path}", params={"prompt": "a fox"})

    assert response.status_code == 405
    assert response.json() == {"error": "Not allowed"}


def test_an_unknown_path_is_a_404(start_worker: StartWorker, client: httpx.Client) -> None:
    url = start_worker()

    response = client.get(f"{url}/midjourney", params={"prompt": "a fox"})

    assert response.status_code == 404


def test_health_counts_image_requests(client: httpx.Client) -> None:
    worker = DevWorker(DevWorkerConfig())
    with worker as url:
        client.get(f"{url}/flux", params={"prompt": "one"})
        client.post(f"{url}/sdxl", json={"prompt": "two"})
        client.post(f"{url}/flux")  # refused, still a request the worker saw

        health = client.get(f"{url}/health")

        assert health.status_code == 200
        assert health.json() == {"ok": True, "requests": 3}
        assert worker.request_count == 3


@pytest.mark.parametrize("fail_status", [503, 429, 500])
def test_fail_rate_one_always_fails(
    start_worker: StartWorker, client: httpx.Client, fail_status: int
) -> None:
    url = start_worker(fail_rate=1.0, fail_status=fail_status)

    flux = client.get(f"{url}/flux", params={"prompt": "a fox"})
    sdxl = client.post(f"{url}/sdxl", json={"prompt": "a fox"})

    for response in (flux, sdxl):
        assert response.status_code == fail_status
        assert response.json() == {
            "error": "Failed to generate image",
            "details": "development worker: injected failure",
        }
        if fail_status in (429, 503):
            assert response.headers["retry-after"] == "1"
        else:
            assert "retry-after" not in response.headers


def test_failures_are_reproducible_for_a_seed(
    start_worker: StartWorker, client: httpx.Client
) -> None:
    def outcomes(url: str) -> list[int]:
        return [
            client.get(f"{url}/flux", params={"prompt": f"fox {i}"}).status_code for i in range(20)
        ]

    first = outcomes(start_worker(fail_rate=0.5, seed=7, fast=True))
    second = outcomes(start_worker(fail_rate=0.5, seed=7, fast=True))

    assert first == second
    assert set(first) == {200, 503}


def test_the_same_prompt_and_seed_give_the_same_bytes(
    start_worker: StartWorker, client: httpx.Client
) -> None:
    url = start_worker()

    def flux(prompt: str, seed: int) -> bytes:
        response = client.get(f"{url}/flux", params={"prompt": prompt, "seed": seed})
        assert response.status_code == 200
        return response.content

    def sdxl(prompt: str, seed: int) -> bytes:
        response = client.post(f"{url}/sdxl", json={"prompt": prompt, "seed": seed})
        assert response.status_code == 200
        return response.content

    assert flux("a fox", 1) == flux("a fox", 1)
    assert sdxl("a fox", 1) == sdxl("a fox", 1)
    assert flux("a fox", 1) != flux("a fox", 2)
    assert sdxl("a fox", 1) != sdxl("a wolf", 1)


def test_width_and_height_are_honoured(start_worker: StartWorker, client: httpx.Client) -> None:
    url = start_worker()

    flux = client.get(f"{url}/flux", params={"prompt": "a fox", "width": 640, "height": 384})
    sdxl = client.post(f"{url}/sdxl", json={"prompt": "a fox", "width": 768, "height": 1024})

    assert image_size(flux.content) == (640, 384)
    assert image_size(sdxl.content) == (768, 1024)


def test_sizes_are_clamped(start_worker: StartWorker, client: httpx.Client) -> None:
    url = start_worker()

    response = client.post(f"{url}/sdxl", json={"prompt": "a fox", "width": 5, "height": 99_999})

    assert image_size(response.content) == (MIN_SIZE_PX, MAX_SIZE_PX)


def test_fast_mode_serves_one_small_image_per_format(
    start_worker: StartWorker, client: httpx.Client
) -> None:
    url = start_worker(fast=True)

    first = client.get(f"{url}/flux", params={"prompt": "a fox", "width": 1024})
    second = client.get(f"{url}/flux", params={"prompt": "something else entirely"})
    png = client.post(f"{url}/sdxl", json={"prompt": "a fox"})

    assert first.headers["content-type"] == "image/jpeg"
    assert first.content.startswith(JPEG_MAGIC)
    assert first.content == second.content
    assert image_size(first.content) == (FAST_SIZE_PX, FAST_SIZE_PX)
    assert png.headers["content-type"] == "image/png"
    assert png.content.startswith(PNG_MAGIC)


@pytest.mark.parametrize(
    "prompt",
    [
        "یک گربه‌ی نارنجی روی پشت‌بام تهران در غروب",
        "🦊🌨️ a fox 👨‍👩‍👧 in the snow",
        "中文提示词 — «quotes» and\ttabs\nand newlines \x00\x1b",
        "x" * 3000,
    ],
)
def test_any_prompt_renders(start_worker: StartWorker, client: httpx.Client, prompt: str) -> None:
    url = start_worker()

    flux = client.get(f"{url}/flux", params={"prompt": prompt})
    sdxl = client.post(f"{url}/sdxl", json={"prompt": prompt})

    assert flux.status_code == 200
    assert flux.content.startswith(JPEG_MAGIC)
    assert sdxl.status_code == 200
    assert sdxl.content.startswith(PNG_MAGIC)


def test_a_lone_surrogate_in_json_does_not_crash(
    start_worker: StartWorker, client: httpx.Client
) -> None:
    url = start_worker()

    response = client.post(
        f"{url}/sdxl",
        content=b'{"prompt": "broken \\ud800 text"}',
        headers={"Content-Type": "application/json"},
    )

    assert response.status_code == 200
    assert response.content.startswith(PNG_MAGIC)


def test_the_authorization_header_is_never_logged(
    start_worker: StartWorker, client: httpx.Client, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="sakaibot.workers.devserver")
    url = start_worker(api_key=API_KEY)

    client.post(f"{url}/sdxl", json={"prompt": "a fox"}, headers={"Authorization": "Bearer x"})
    client.post(
        f"{url}/sdxl", json={"prompt": "a fox"}, headers={"Authorization": f"Bearer {API_KEY}"}
    )

    assert "POST /sdxl -> 401" in caplog.text
    assert "POST /sdxl -> 200" in caplog.text
    assert API_KEY not in caplog.text
    assert "Bearer" not in caplog.text


def test_stop_drops_idle_keep_alive_connections(client: httpx.Client) -> None:
    worker = DevWorker(DevWorkerConfig(fast=True))
    url = worker.start()
    assert client.get(f"{url}/health").status_code == 200  # leaves a pooled connection

    worker.stop()

    with pytest.raises(httpx.TransportError):
        client.get(f"{url}/health")


def test_start_twice_is_refused_and_stop_twice_is_harmless() -> None:
    worker = DevWorker()
    worker.start()
    try:
        with pytest.raises(RuntimeError):
            worker.start()
    finally:
        worker.stop()
    worker.stop()


@pytest.mark.parametrize(
    "fields",
    [{"fail_rate": 1.5}, {"fail_rate": -0.1}, {"latency_ms": -1}, {"fail_status": 200}],
)
def test_config_rejects_nonsense(fields: dict[str, object]) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 (the message is checked by eye)
        DevWorkerConfig(**fields)  # type: ignore[arg-type]


def test_render_preview_is_deterministic_and_sized() -> None:
    first = render_preview("a fox", seed=3, width=300, height=200, image_format="JPEG")
    second = render_preview("a fox", seed=3, width=300, height=200, image_format="JPEG")

    assert first == second
    assert image_size(first) == (300, 200)


def test_latency_is_added_before_answering(start_worker: StartWorker, client: httpx.Client) -> None:
    url = start_worker(latency_ms=100, fast=True)

    response = client.get(f"{url}/flux", params={"prompt": "a fox"})

    assert response.status_code == 200
    assert response.elapsed.total_seconds() >= 0.1


def test_serve_forever_returns_once_stopped(client: httpx.Client) -> None:
    worker = DevWorker(DevWorkerConfig(fast=True))
    urls: list[str] = []
    ready = threading.Event()

    def on_ready(url: str) -> None:
        urls.append(url)
        ready.set()

    thread = threading.Thread(target=worker.serve_forever, kwargs={"on_ready": on_ready})
    thread.start()
    try:
        assert ready.wait(timeout=5)
        assert client.get(f"{urls[0]}/health").json()["ok"] is True
    finally:
        worker.stop()
        thread.join(timeout=5)

    assert not thread.is_alive()


# --------------------------------------------------------------------------- fault modes

#: Short, so the hanging faults cost a fraction of a second each.
HANG_TIMEOUT_S = 0.3
FAULT_HEADER = "X-SakaiBot-Fault"

WorkerFactory = Callable[..., DevWorker]


@pytest.fixture
def make_worker() -> Iterator[WorkerFactory]:
    """Like ``start_worker``, but hands back the started worker (for ``served``)."""
    workers: list[DevWorker] = []

    def make(**fields: object) -> DevWorker:
        worker = DevWorker(DevWorkerConfig(**fields))  # type: ignore[arg-type]
        workers.append(worker)
        worker.start()
        return worker

    yield make
    for worker in workers:
        worker.stop()


def flux(client: httpx.Client, url: str, prompt: str = "a fox", **params: str) -> httpx.Response:
    return client.get(f"{url}/flux", params={"prompt": prompt, **params})


#: name -> (status, error, a piece of the details, Retry-After)
ERROR_FAULTS: dict[str, tuple[int, str, str, str | None]] = {
    "400": (400, "Bad request", "3003", None),
    "401": (401, "Unauthorized", "bearer", None),
    "405": (405, "Not allowed", "not allowed", None),
    "408": (408, "Request timeout", "3007", None),
    "413": (413, "Request too large", "3006", None),
    "429": (429, "Failed to generate image", "3040: Out of capacity", None),
    "429-quota": (429, "Failed to generate image", "3036", None),
    "500": (500, "Failed to generate image", "internal error", None),
    "500-nsfw": (500, "Failed to generate image", "NSFW", None),
    "500-capacity": (500, "Failed to generate image", "3040: Out of capacity", None),
    "502": (502, "Bad gateway", "fault 502", None),
    "503": (503, "Service unavailable", "fault 503", None),
    "504": (504, "Gateway timeout", "fault 504", None),
    "retry-after": (503, "Service unavailable", "retry-after", "2"),
}


def test_every_fault_name_is_covered_here() -> None:
    others = {"ok", "timeout", "reset", "truncated", "text", "html", "json", "json-result"}
    others |= {"oversized", "trickle"}
    assert set(FAULT_NAMES) == set(ERROR_FAULTS) | others
    assert len(FAULT_NAMES) == len(set(FAULT_NAMES))
    assert LLM_FAULT_NAMES == ("ok", "timeout", "500", "401", "429", "empty", "garbage", "short")


@pytest.mark.parametrize("name", sorted(ERROR_FAULTS))
def test_error_faults_answer_the_common_workers_json(
    start_worker: StartWorker, client: httpx.Client, name: str
) -> None:
    status, error, details_piece, retry_after = ERROR_FAULTS[name]
    url = start_worker(fast=True)

    response = client.get(f"{url}/flux", params={"prompt": "a fox"}, headers={FAULT_HEADER: name})

    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"error", "details"}
    assert body["error"] == error
    assert details_piece in body["details"]
    assert response.headers.get("retry-after") == retry_after


def test_error_bodies_say_what_the_bots_client_looks_for(
    start_worker: StartWorker, client: httpx.Client
) -> None:
    url = start_worker(fast=True)

    def details(name: str) -> str:
        return str(flux(client, url, fault=name).json()["details"])

    quota = details("429-quota")
    assert "3036" in quota
    assert "daily free allocation" in quota
    assert "neurons" in quota
    assert "filtered" in details("500-nsfw")
    # Only the quota fault may look like a quota, only the NSFW one like a filter.
    for name in set(ERROR_FAULTS) - {"429-quota", "500-nsfw"}:
        text = details(name).lower()
        assert "3036" not in text
        assert "neurons" not in text
        assert "nsfw" not in text
        assert "filtered" not in text


def test_text_fault_is_a_200_text_plain(start_worker: StartWorker, client: httpx.Client) -> None:
    url = start_worker(fast=True)

    response = flux(client, url, fault="text")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert response.text == "missing prompt"


def test_html_fault_is_a_200_html_page(start_worker: StartWorker, client: httpx.Client) -> None:
    url = start_worker(fast=True)

    response = flux(client, url, fault="html")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert response.text.startswith("<!DOCTYPE html>")
    assert "</html>" in response.text


@pytest.mark.parametrize(
    ("name", "path"), [("json", ("image",)), ("json-result", ("result", "image"))]
)
def test_json_faults_carry_a_base64_jpeg(
    start_worker: StartWorker, client: httpx.Client, name: str, path: tuple[str, ...]
) -> None:
    url = start_worker()

    # On the POST contract too: a worker that forwards the model's raw JSON.
    response = client.post(f"{url}/sdxl", json={"prompt": f"a fox [fault:{name}]"})

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    payload: object = response.json()
    for key in path:
        assert isinstance(payload, dict)
        payload = payload[key]
    assert isinstance(payload, str)
    data = base64.b64decode(payload, validate=True)
    assert data.startswith(JPEG_MAGIC)
    assert image_size(data) == (512, 512)


def test_timeout_fault_never_answers(make_worker: WorkerFactory) -> None:
    worker = make_worker(fast=True)

    with (
        httpx.Client(timeout=HANG_TIMEOUT_S, verify=TLS) as quick,
        pytest.raises(httpx.ReadTimeout),
    ):
        flux(quick, worker.url, fault="timeout")

    assert worker.served == [("/flux", "timeout")]


def test_reset_fault_resets_the_connection_mid_body(
    start_worker: StartWorker, client: httpx.Client
) -> None:
    url = start_worker(fast=True)

    with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
        flux(client, url, fault="reset")

    # The worker itself is fine afterwards.
    assert flux(client, url).status_code == 200


def test_reset_fault_sends_the_head_before_resetting(
    start_worker: StartWorker, client: httpx.Client
) -> None:
    url = start_worker(fast=True)
    received = bytearray()

    def read_all(response: httpx.Response) -> None:
        for chunk in response.iter_bytes():
            received.extend(chunk)

    with client.stream("GET", f"{url}/flux", params={"prompt": "a fox", "fault": "reset"}) as r:
        assert r.status_code == 200
        declared = int(r.headers["content-length"])
        with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
            read_all(r)

    assert len(received) < declared


def test_truncated_fault_announces_more_than_it_sends(
    start_worker: StartWorker, client: httpx.Client
) -> None:
    url = start_worker(fast=True)

    with pytest.raises(httpx.RemoteProtocolError, match=r"incomplete|complete message body"):
        client.post(f"{url}/sdxl", json={"prompt": "a fox"}, headers={FAULT_HEADER: "truncated"})


def test_oversized_fault_streams_the_whole_declared_body(
    start_worker: StartWorker, client: httpx.Client
) -> None:
    size = 2 * 1024 * 1024
    url = start_worker(fast=True, oversized_bytes=size)
    received = bytearray()
    chunks = 0

    with client.stream("GET", f"{url}/flux", params={"prompt": "a fox [fault:oversized]"}) as r:
        assert r.status_code == 200
        assert r.headers["content-type"] == "image/jpeg"
        assert int(r.headers["content-length"]) == size
        for chunk in r.iter_bytes():
            received += chunk
            chunks += 1

    assert len(received) == size
    assert received.startswith(JPEG_MAGIC)
    assert chunks > 1


def test_trickle_fault_delivers_a_valid_image_slowly(
    start_worker: StartWorker, client: httpx.Client
) -> None:
    url = start_worker(trickle_delay_ms=20)

    started = time.monotonic()
    response = client.post(f"{url}/sdxl", json={"prompt": "a fox [fault:trickle]"})
    elapsed = time.monotonic() - started

    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"
    assert image_size(response.content) == (512, 512)
    assert elapsed >= (TRICKLE_CHUNKS - 1) * 0.02 * 0.9


def test_trickle_with_a_tiny_delay_is_quick(
    start_worker: StartWorker, client: httpx.Client
) -> None:
    url = start_worker(fast=True, trickle_delay_ms=0)

    response = flux(client, url, fault="trickle")

    assert response.status_code == 200
    assert response.content.startswith(JPEG_MAGIC)
    assert image_size(response.content) == (FAST_SIZE_PX, FAST_SIZE_PX)


# -- selecting a fault


def test_the_header_picks_a_fault(start_worker: StartWorker, client: httpx.Client) -> None:
    url = start_worker(fast=True)

    response = client.post(f"{url}/sdxl", json={"prompt": "a fox"}, headers={FAULT_HEADER: "502"})

    assert response.status_code == 502


def test_the_query_parameter_picks_a_fault(start_worker: StartWorker, client: httpx.Client) -> None:
    url = start_worker(fast=True)

    assert flux(client, url, fault="504").status_code == 504
    # A POST worker URL may carry it too (the bot keeps a worker URL's own query).
    assert client.post(f"{url}/sdxl?fault=408", json={"prompt": "a fox"}).status_code == 408


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_a_prompt_marker_picks_a_fault(
    start_worker: StartWorker, client: httpx.Client, method: str
) -> None:
    url = start_worker(fast=True)
    prompt = "a fox in the snow [fault:500-nsfw], golden hour"

    if method == "GET":
        response = flux(client, url, prompt)
    else:
        response = client.post(f"{url}/sdxl", json={"prompt": prompt})

    assert response.status_code == 500
    assert "NSFW" in response.json()["details"]


def test_the_run_fault_applies_to_every_request(
    start_worker: StartWorker, client: httpx.Client
) -> None:
    url = start_worker(fast=True, fault="429-quota")

    assert flux(client, url).status_code == 429
    assert client.post(f"{url}/sdxl", json={"prompt": "a wolf"}).status_code == 429
    assert client.get(f"{url}/health").status_code == 200


def test_per_request_beats_per_run_header_first(
    start_worker: StartWorker, client: httpx.Client
) -> None:
    url = start_worker(fast=True, fault="503")

    marker = flux(client, url, "a fox [fault:502]")
    query = client.get(f"{url}/flux", params={"prompt": "a fox [fault:502]", "fault": "504"})
    header = client.get(
        f"{url}/flux",
        params={"prompt": "a fox [fault:502]", "fault": "504"},
        headers={FAULT_HEADER: "408"},
    )
    healthy = flux(client, url, "a fox [fault:ok]")

    assert [marker.status_code, query.status_code, header.status_code] == [502, 504, 408]
    assert healthy.status_code == 200
    assert healthy.content.startswith(JPEG_MAGIC)


def test_fault_names_ignore_case_and_spaces(
    start_worker: StartWorker, client: httpx.Client
) -> None:
    url = start_worker(fast=True)

    assert flux(client, url, "a fox [FAULT: Retry-After ]").status_code == 503
    assert flux(client, url, fault=" 429-QUOTA ").status_code == 429


def test_a_repeat_limited_fault_counts_per_prompt(
    make_worker: WorkerFactory, client: httpx.Client
) -> None:
    worker = make_worker(fast=True)
    url = worker.url

    first = [flux(client, url, "a fox [fault:503*2]").status_code for _ in range(4)]
    other = [flux(client, url, "a wolf [fault:503*2]").status_code for _ in range(3)]
    sdxl = client.post(f"{url}/sdxl", json={"prompt": "a fox [fault:503*2]"})

    assert first == [503, 503, 200, 200]
    assert other == [503, 503, 200]
    assert sdxl.status_code == 200  # the count belongs to the prompt, on any path
    assert [what for _path, what in worker.served] == [
        *["503", "503", "ok", "ok"],
        *["503", "503", "ok"],
        "ok",
    ]


def test_a_repeat_limited_header_and_run_fault_count_per_prompt(
    start_worker: StartWorker, client: httpx.Client
) -> None:
    url = start_worker(fast=True, fault="429*1")
    headers = {FAULT_HEADER: "502*1"}

    run = [flux(client, url, "a fox").status_code for _ in range(2)]
    header = [
        client.post(f"{url}/sdxl", json={"prompt": "a cat"}, headers=headers).status_code
        for _ in range(2)
    ]

    assert run == [429, 200]
    assert header == [502, 200]


@pytest.mark.parametrize(
    "how",
    [
        {"headers": {FAULT_HEADER: "teapot"}},
        {"params": {"prompt": "a fox", "fault": "teapot"}},
        {"params": {"prompt": "a fox [fault:teapot]"}},
    ],
)
def test_an_unknown_fault_is_a_400(
    make_worker: WorkerFactory, client: httpx.Client, how: dict[str, object]
) -> None:
    worker = make_worker(fast=True)
    how = {"params": {"prompt": "a fox"}, **how}

    response = client.get(f"{worker.url}/flux", **how)  # type: ignore[arg-type]

    assert response.status_code == 400
    body = response.json()
    assert body["error"] == "unknown fault teapot"
    assert body["details"].startswith("known: ok, 400,")
    assert "json-result" in body["details"]
    assert worker.served == [("/flux", "refused:400")]


@pytest.mark.parametrize("spec", ["503*0", "503*", "503*x", "*2", ""])
def test_malformed_repeat_counts_are_unknown_faults(spec: str) -> None:
    with pytest.raises(ValueError, match="fault"):
        parse_fault(spec)


def test_parse_fault() -> None:
    assert parse_fault("503").limit is None
    assert parse_fault("503*2").text == "503*2"
    assert parse_fault(" JSON-Result*10 ").name == "json-result"


@pytest.mark.parametrize(
    "fields",
    [
        {"fault": "teapot"},
        {"fault": "503*0"},
        {"oversized_bytes": 0},
        {"trickle_delay_ms": -1},
    ],
)
def test_config_rejects_bad_fault_settings(fields: dict[str, object]) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 (the message is checked by eye)
        DevWorkerConfig(**fields)  # type: ignore[arg-type]


def test_markers_are_not_drawn(start_worker: StartWorker, client: httpx.Client) -> None:
    url = start_worker()

    marked = flux(client, url, "a fox [fault:503*1]")  # the one 503
    marked = flux(client, url, "a fox [fault:503*1]")
    plain = flux(client, url, "a fox")

    assert marked.status_code == 200
    assert marked.content == plain.content
    assert strip_markers("a fox [fault:503*2] [llm:short] in snow") == "a fox in snow"
    assert strip_markers("no\tmarker\n") == "no\tmarker\n"


def test_fail_rate_still_works_and_a_fault_takes_precedence(
    make_worker: WorkerFactory, client: httpx.Client
) -> None:
    worker = make_worker(fast=True, fail_rate=1.0, fail_status=500)

    rolled = flux(client, worker.url)
    faulted = flux(client, worker.url, fault="text")

    assert rolled.status_code == 500
    assert rolled.json()["details"] == "development worker: injected failure"
    assert faulted.status_code == 200
    assert faulted.text == "missing prompt"
    assert worker.served == [("/flux", "fail-rate:500"), ("/flux", "text")]


def test_served_logs_every_request_thread_safely(
    make_worker: WorkerFactory, client: httpx.Client
) -> None:
    worker = make_worker(fast=True, api_key=API_KEY)
    auth = {"Authorization": f"Bearer {API_KEY}"}

    flux(client, worker.url)
    flux(client, worker.url, fault="503")
    client.post(f"{worker.url}/sdxl", json={"prompt": "a fox"})  # no bearer
    client.post(f"{worker.url}/sdxl", json={"prompt": "[fault:json]"}, headers=auth)
    client.get(f"{worker.url}/health")  # not an image or LLM request: not logged

    def hammer() -> None:
        with httpx.Client(timeout=10.0, verify=TLS) as own:
            for _ in range(5):
                flux(own, worker.url, fault="html")

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    served = worker.served
    assert served[:4] == [
        ("/flux", "ok"),
        ("/flux", "503"),
        ("/sdxl", "refused:401"),
        ("/sdxl", "json"),
    ]
    assert served[4:] == [("/flux", "html")] * 20
    served.clear()  # a copy
    assert len(worker.served) == 24


def test_latency_comes_before_a_fault(start_worker: StartWorker, client: httpx.Client) -> None:
    url = start_worker(fast=True, latency_ms=100)

    response = flux(client, url, fault="503")

    assert response.status_code == 503
    assert response.elapsed.total_seconds() >= 0.1


# -- stopping while faults are in progress


def test_stop_ends_hanging_and_trickling_handlers_promptly() -> None:
    worker = DevWorker(DevWorkerConfig(fast=True, trickle_delay_ms=60_000))
    url = worker.start()
    errors: list[BaseException] = []

    def call(fault: str) -> None:
        with httpx.Client(timeout=10.0, verify=TLS) as own:
            try:
                flux(own, url, fault=fault)
            except httpx.TransportError as exc:
                errors.append(exc)

    threads = [threading.Thread(target=call, args=(name,)) for name in ("timeout", "trickle")]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 5
    while len(worker.served) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sorted(what for _path, what in worker.served) == ["timeout", "trickle"]

    started = time.monotonic()
    worker.stop()
    stopped_in = time.monotonic() - started
    for thread in threads:
        thread.join(timeout=5)

    assert stopped_in < 1.0
    assert not any(thread.is_alive() for thread in threads)
    assert len(errors) == 2  # neither client got an answer


def test_a_hanging_handler_notices_the_client_left(make_worker: WorkerFactory) -> None:
    worker = make_worker(fast=True)

    with httpx.Client(timeout=0.1, verify=TLS) as quick, pytest.raises(httpx.ReadTimeout):
        flux(quick, worker.url, fault="timeout")

    deadline = time.monotonic() + 2
    while worker._connections and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not worker._connections


# -- the bot's own client against the faults


def _model(url: str, contract: Contract) -> ModelSpec:
    path = "/flux" if contract is Contract.GET else "/sdxl"
    return ModelSpec(name=path[1:], contract=contract, url=f"{url}{path}")


async def _no_sleep(_seconds: float) -> None:
    return None


@pytest.mark.parametrize(
    ("fault", "expected"),
    [
        ("ok", None),
        ("json", None),
        ("json-result", None),
        ("trickle", None),
        ("400", WorkerBadRequest),
        ("401", WorkerAuthError),
        ("413", WorkerBadRequest),
        ("429", WorkerGaveUp),
        ("429-quota", QuotaExhausted),
        ("500", WorkerGaveUp),
        ("500-nsfw", ContentFiltered),
        ("500-capacity", WorkerGaveUp),
        ("retry-after", WorkerGaveUp),
        ("timeout", WorkerGaveUp),
        ("reset", WorkerGaveUp),
        ("truncated", WorkerGaveUp),
        ("text", InvalidImage),
        ("html", InvalidImage),
        ("oversized", ImageTooLarge),
    ],
)
async def test_the_bots_client_reads_each_fault_as_intended(
    start_worker: StartWorker, fault: str, expected: type[GenerationError] | None
) -> None:
    url = start_worker(fast=True, oversized_bytes=2_000_000, trickle_delay_ms=0)
    async with build_http_client(connect_timeout_s=2.0, read_timeout_s=HANG_TIMEOUT_S) as http:
        client = WorkerClient(
            http, max_image_bytes=1_000_000, retry_budget_s=60.0, max_attempts=1, sleep=_no_sleep
        )
        result = await client.generate(
            _model(url, Contract.GET), GenerationParams(prompt=f"a fox [fault:{fault}]")
        )

    if expected is None:
        assert result.success, result.error
    else:
        assert isinstance(result.error, expected)


async def test_a_repeat_limited_fault_is_retried_through_by_the_bots_client(
    make_worker: WorkerFactory,
) -> None:
    worker = make_worker(fast=True)
    async with build_http_client(connect_timeout_s=2.0, read_timeout_s=5.0) as http:
        client = WorkerClient(
            http, max_image_bytes=1_000_000, retry_budget_s=60.0, max_attempts=4, sleep=_no_sleep
        )
        image = await client.fetch_image(
            _model(worker.url, Contract.POST), GenerationParams(prompt="a fox [fault:503*2]")
        )

    assert image.mime_type == "image/png"
    assert worker.served == [("/sdxl", "503"), ("/sdxl", "503"), ("/sdxl", "ok")]


# --------------------------------------------------------------------------- development LLM


def _llm(url: str, timeout: float = 0.5) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0, timeout=timeout)


async def _ask(llm: openai.AsyncOpenAI, prompt: str, model: str = "any-model") -> str | None:
    completion = await llm.chat.completions.create(
        model=model,
        messages=[
            {"role": "system", "content": "You improve prompts."},
            {"role": "user", "content": prompt},
        ],
    )
    return completion.choices[0].message.content


async def test_the_llm_enhances_deterministically(make_worker: WorkerFactory) -> None:
    worker = make_worker(fast=True)

    async with _llm(worker.url) as llm:
        first = await _ask(llm, "a red fox in the snow")
        second = await _ask(llm, "a red fox in the snow")
        marked = await _ask(llm, "a fox [fault:503*2]")

    assert first == f"a red fox in the snow{DEV_LLM_SUFFIX}"
    assert first == second
    # An image fault marker survives, so it reaches the worker after enhancement.
    assert marked == f"a fox [fault:503*2]{DEV_LLM_SUFFIX}"
    assert worker.served == [("/v1/chat/completions", "ok")] * 3


async def test_the_llm_answers_a_chat_completion_with_the_model_echoed(
    start_worker: StartWorker,
) -> None:
    url = start_worker(fast=True, api_key=API_KEY)  # the image key is not the LLM's

    async with httpx.AsyncClient(timeout=5.0, verify=TLS) as http:
        response = await http.post(
            f"{url}/v1/chat/completions",
            json={
                "model": "m1",
                "messages": [{"role": "user", "content": [{"type": "text", "text": "a cat"}]}],
            },
        )

    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "chat.completion"
    assert body["model"] == "m1"
    assert body["choices"][0]["message"] == {
        "role": "assistant",
        "content": f"a cat{DEV_LLM_SUFFIX}",
    }
    assert body["choices"][0]["finish_reason"] == "stop"


async def test_the_llm_lists_its_model(start_worker: StartWorker) -> None:
    url = start_worker(fast=True)

    async with _llm(url) as llm:
        models = await llm.models.list()

    assert [model.id for model in models.data] == [DEV_LLM_MODEL]


async def test_llm_500_fault(start_worker: StartWorker) -> None:
    url = start_worker(fast=True)

    async with _llm(url) as llm:
        with pytest.raises(openai.InternalServerError):
            await _ask(llm, "a fox [llm:500]")
        assert await _ask(llm, "a fox") == f"a fox{DEV_LLM_SUFFIX}"


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        ("401", openai.AuthenticationError),
        ("429", openai.RateLimitError),
        ("timeout", openai.APITimeoutError),
    ],
)
async def test_llm_error_faults(
    start_worker: StartWorker, fault: str, error: type[Exception]
) -> None:
    url = start_worker(fast=True)

    async with _llm(url, timeout=HANG_TIMEOUT_S) as llm:
        with pytest.raises(error):
            await _ask(llm, f"a fox [llm:{fault}]")


@pytest.mark.parametrize(("fault", "content"), [("empty", ""), ("short", "ok")])
async def test_llm_useless_answer_faults(
    start_worker: StartWorker, fault: str, content: str
) -> None:
    url = start_worker(fast=True)

    async with _llm(url) as llm:
        assert await _ask(llm, f"a fox [llm:{fault}]") == content


async def test_llm_garbage_fault_is_a_200_that_is_not_json(start_worker: StartWorker) -> None:
    url = start_worker(fast=True)
    body = {"model": "m", "messages": [{"role": "user", "content": "a fox [llm:garbage]"}]}

    async with httpx.AsyncClient(timeout=5.0, verify=TLS) as http:
        response = await http.post(f"{url}/v1/chat/completions", json=body)

    assert response.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        json.loads(response.content)


async def test_llm_fault_by_header_and_repeat_count(make_worker: WorkerFactory) -> None:
    worker = make_worker(fast=True)
    async with httpx.AsyncClient(timeout=5.0, verify=TLS) as http:

        async def status(headers: dict[str, str], prompt: str = "a fox") -> int:
            body = {"model": "m", "messages": [{"role": "user", "content": prompt}]}
            response = await http.post(
                f"{worker.url}/v1/chat/completions", json=body, headers=headers
            )
            return response.status_code

        assert await status({"X-SakaiBot-LLM-Fault": "429"}) == 429
        assert await status({FAULT_HEADER: "401"}) == 401
        # The LLM header wins over the generic one, and both over the marker.
        assert await status({"X-SakaiBot-LLM-Fault": "500", FAULT_HEADER: "401"}) == 500
        assert await status({FAULT_HEADER: "ok"}, "a fox [llm:500]") == 200
        assert [await status({}, "a cat [llm:500*1]") for _ in range(2)] == [500, 200]
        # An image-only fault name is unknown to the LLM.
        unknown = await http.post(
            f"{worker.url}/v1/chat/completions",
            json={"model": "m", "messages": [{"role": "user", "content": "[llm:oversized]"}]},
        )

    assert unknown.status_code == 400
    error = unknown.json()["error"]
    assert error["message"] == "unknown fault oversized"
    assert error["details"].startswith("known: ok, timeout,")
    assert worker.served[-1] == ("/v1/chat/completions", "refused:400")


async def test_llm_refuses_nonsense_openai_style(start_worker: StartWorker) -> None:
    url = start_worker(fast=True)

    async with httpx.AsyncClient(timeout=5.0, verify=TLS) as http:
        no_model = await http.post(f"{url}/v1/chat/completions", json={"messages": []})
        not_json = await http.post(f"{url}/v1/chat/completions", content=b"{nope")
        wrong_method = await http.get(f"{url}/v1/chat/completions")

    assert no_model.status_code == 400
    assert no_model.json()["error"]["message"] == "model is required"
    assert not_json.status_code == 400
    assert wrong_method.status_code == 405
    assert wrong_method.json()["error"]["type"] == "invalid_request_error"


def test_llm_requests_are_not_image_requests(make_worker: WorkerFactory) -> None:
    worker = make_worker(fast=True)

    with httpx.Client(timeout=5.0, verify=TLS) as http:
        http.get(f"{worker.url}/v1/models")

    assert worker.request_count == 0
    assert worker.served == [("/v1/models", "ok")]

"""The development worker over real loopback HTTP: both contracts, errors, injection."""

from __future__ import annotations

import io
import logging
import threading
from collections.abc import Callable, Iterator

import httpx
import pytest
from PIL import Image

from sakaibot.workers.devserver import (
    FAST_SIZE_PX,
    MAX_SIZE_PX,
    MIN_SIZE_PX,
    DevWorker,
    DevWorkerConfig,
    render_preview,
)

JPEG_MAGIC = b"\xff\xd8\xff"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
API_KEY = "dev-worker-test-key"

StartWorker = Callable[..., str]


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
    with httpx.Client(timeout=10.0) as http:
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

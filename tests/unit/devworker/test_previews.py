"""The labelled previews: deterministic, sized as asked, any prompt drawn, markers left out."""

from __future__ import annotations

import httpx
import pytest

from sakaibot.devworker import FAST_SIZE_PX, MAX_SIZE_PX, MIN_SIZE_PX, render_preview, strip_markers
from tests.support.devworker import JPEG_MAGIC, PNG_MAGIC, StartWorker, flux, image_size


def test_render_preview_is_deterministic_and_sized() -> None:
    first = render_preview("a fox", seed=3, width=300, height=200, image_format="JPEG")
    second = render_preview("a fox", seed=3, width=300, height=200, image_format="JPEG")

    assert first == second
    assert image_size(first) == (300, 200)


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


def test_markers_are_not_drawn(start_worker: StartWorker, client: httpx.Client) -> None:
    url = start_worker()

    marked = flux(client, url, "a fox [fault:503*1]")  # the one 503
    marked = flux(client, url, "a fox [fault:503*1]")
    plain = flux(client, url, "a fox")

    assert marked.status_code == 200
    assert marked.content == plain.content
    assert strip_markers("a fox [fault:503*2] [llm:short] in snow") == "a fox in snow"
    assert strip_markers("no\tmarker\n") == "no\tmarker\n"

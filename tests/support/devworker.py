"""What the development worker's tests share: HTTP helpers, constants and types."""

from __future__ import annotations

import io
import ssl
from collections.abc import Callable

import httpx
from PIL import Image

from sakaibot.devworker import DevWorker

JPEG_MAGIC = b"\xff\xd8\xff"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
API_KEY = "dev-worker-test-key"
#: Written out rather than imported, so a renamed header fails the tests.
FAULT_HEADER = "X-SakaiBot-Fault"
#: Short, so the hanging faults cost a fraction of a second each.
HANG_TIMEOUT_S = 0.3

#: Loaded once: every client here talks plain HTTP to loopback, and loading the CA
#: bundle for each new client would be most of a test's set-up time.
TLS = ssl.create_default_context()

#: ``start_worker(**config_fields)``: a started worker's URL.
StartWorker = Callable[..., str]
#: ``make_worker(**config_fields)``: a started worker (for ``served``).
WorkerFactory = Callable[..., DevWorker]


def image_size(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as image:
        return image.size


def flux(client: httpx.Client, url: str, prompt: str = "a fox", **params: str) -> httpx.Response:
    return client.get(f"{url}/flux", params={"prompt": prompt, **params})

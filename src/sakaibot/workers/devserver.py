"""A development image worker on loopback that speaks both worker contracts.

``sakaibot dev-worker``, ``sakaibot chat --local``, the integration tests and
the benchmarks run against it instead of Cloudflare. It answers

- ``GET /flux?prompt=...`` (optional ``seed``, ``steps``, ``width``, ``height``)
  with a JPEG, like a Flux worker;
- ``POST /sdxl`` with a JSON body (``prompt``, optional ``negative_prompt``,
  ``width``, ``height``, ``num_steps``, ``seed``) and, when an API key is
  configured, ``Authorization: Bearer <key>``, with a PNG, like the common SDXL
  worker, including its error bodies;
- ``GET /health`` with ``{"ok": true, "requests": n}``.

The image is never presented as a generated one: it is a seeded gradient that
says in so many words that it is a preview from the development worker, with
the prompt written on it. The same prompt, seed and size give the same bytes.

Latency and failures can be injected (``latency_ms``, ``fail_rate``,
``fail_status``); the failure dice are seeded, so a run is reproducible.
Only the standard library and Pillow are used.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import hmac
import io
import json
import logging
import random
import socket
import textwrap
import threading
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit

from PIL import Image, ImageDraw, ImageFont

logger = logging.getLogger(__name__)

ImageFormat = Literal["JPEG", "PNG"]

#: What every preview says about itself (ASCII, so every font can draw it).
PREVIEW_LABEL = "SakaiBot development worker - PREVIEW, not a generated image"

DEFAULT_SIZE_PX = 512
MIN_SIZE_PX = 64
MAX_SIZE_PX = 1536
#: Side of the one pre-rendered image per format served in fast mode.
FAST_SIZE_PX = 256
#: POST bodies above this are refused with 413 (a prompt is at most a few kB).
MAX_BODY_BYTES = 1_000_000
#: Prompt characters written on the image; the rest is left out.
MAX_DRAWN_PROMPT_CHARS = 600

_MIME_TYPES: dict[ImageFormat, str] = {"JPEG": "image/jpeg", "PNG": "image/png"}
_RETRY_AFTER_STATUSES = frozenset({429, 503})
_INJECTED_FAILURE = {
    "error": "Failed to generate image",
    "details": "development worker: injected failure",
}


@dataclass(frozen=True)
class DevWorkerConfig:
    """How the development worker behaves; the defaults answer at once, always."""

    host: str = "127.0.0.1"
    #: 0 picks any free port; :meth:`DevWorker.start` returns the one chosen.
    port: int = 0
    #: Slept in the handler thread before each image answer (also before failures).
    latency_ms: int = 0
    #: Probability (0..1) that an image request answers ``fail_status``.
    fail_rate: float = 0.0
    fail_status: int = 503
    #: When set, ``POST /sdxl`` needs ``Authorization: Bearer <api_key>``.
    api_key: str | None = None
    #: Serve one small pre-rendered image per format, whatever the prompt.
    fast: bool = False
    #: Seeds the failure dice, so a run's failures are reproducible.
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be 0..65535, not {self.port}")
        if self.latency_ms < 0:
            raise ValueError(f"latency_ms must not be negative, not {self.latency_ms}")
        if not 0.0 <= self.fail_rate <= 1.0:
            raise ValueError(f"fail_rate must be between 0 and 1, not {self.fail_rate}")
        if not 400 <= self.fail_status <= 599:
            raise ValueError(f"fail_status must be an HTTP error status, not {self.fail_status}")


class _RefusedError(Exception):
    """A request the worker refuses; carries the status and the JSON error text."""

    def __init__(self, status: int, error: str) -> None:
        super().__init__(error)
        self.status = status
        self.error = error


# --------------------------------------------------------------------------- rendering


def clamp_size(value: int | None) -> int:
    """A requested side in pixels, kept within what the worker renders."""
    if value is None:
        return DEFAULT_SIZE_PX
    return max(MIN_SIZE_PX, min(MAX_SIZE_PX, value))


@functools.lru_cache(maxsize=32)
def _font(size_px: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size_px)


def _printable(text: str) -> str:
    # Lone surrogates (possible in JSON) cannot be encoded by any font backend.
    text = text.encode("utf-8", "replace").decode("utf-8")
    return "".join(" " if unicodedata.category(ch) == "Cc" else ch for ch in text)


def _draw_text(
    draw: ImageDraw.ImageDraw,
    xy: tuple[int, int],
    text: str,
    font: ImageFont.FreeTypeFont | ImageFont.ImageFont,
    fill: tuple[int, int, int],
) -> None:
    # The bitmap fallback font only knows Latin-1, and a FreeType font may lack
    # glyphs: degrade to replacement characters rather than fail the request.
    for candidate in (text, text.encode("latin-1", "replace").decode("latin-1")):
        try:
            draw.text(xy, candidate, font=font, fill=fill)
        except (UnicodeError, ValueError, OSError):
            continue
        return
    draw.text(xy, text.encode("ascii", "replace").decode("ascii"), font=font, fill=fill)


def _palette(prompt: str, seed: int) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    digest = hashlib.sha256(prompt.encode("utf-8", "surrogatepass") + b"\x00" + str(seed).encode())
    raw = digest.digest()
    # Channels kept in 24..151 so the white text stays readable on both ends.
    top = (24 + raw[0] % 128, 24 + raw[1] % 128, 24 + raw[2] % 128)
    bottom = (24 + raw[3] % 128, 24 + raw[4] % 128, 24 + raw[5] % 128)
    return top, bottom


def render_preview(
    prompt: str,
    *,
    seed: int = 0,
    width: int = DEFAULT_SIZE_PX,
    height: int = DEFAULT_SIZE_PX,
    image_format: ImageFormat = "PNG",
) -> bytes:
    """A labelled preview image: the same arguments always give the same bytes."""
    width, height = clamp_size(width), clamp_size(height)
    top, bottom = _palette(prompt, seed)
    mask = Image.linear_gradient("L").resize((width, height))
    image = Image.composite(
        Image.new("RGB", (width, height), bottom), Image.new("RGB", (width, height), top), mask
    )
    draw = ImageDraw.Draw(image)

    short_side = min(width, height)
    margin = max(4, short_side // 32)
    label_font = _font(max(8, short_side // 30))
    body_font = _font(max(8, short_side // 24))
    white = (255, 255, 255)
    banner = (240, 200, 40)

    # A frame and a banner, so nobody mistakes this for a real generation.
    draw.rectangle((0, 0, width - 1, height - 1), outline=banner, width=max(2, margin // 2))
    label_lines = textwrap.wrap(PREVIEW_LABEL, width=_chars_per_line(label_font, width, margin))
    line_px = _line_height(label_font)
    banner_bottom = margin + line_px * len(label_lines) + margin // 2
    draw.rectangle((0, 0, width - 1, banner_bottom), fill=banner)
    y = margin
    for line in label_lines:
        _draw_text(draw, (margin, y), line, label_font, (0, 0, 0))
        y += line_px

    y = banner_bottom + margin
    body_line_px = _line_height(body_font)
    header = f"prompt (seed {seed}, {width}x{height}):"
    _draw_text(draw, (margin, y), header, body_font, white)
    y += body_line_px * 2
    max_lines = max(1, (height - y - margin) // body_line_px)
    prompt_lines = textwrap.wrap(
        _printable(prompt)[:MAX_DRAWN_PROMPT_CHARS],
        width=_chars_per_line(body_font, width, margin),
        max_lines=max_lines,
        placeholder=" ...",
    )
    for line in prompt_lines:
        _draw_text(draw, (margin, y), line, body_font, white)
        y += body_line_px

    buffer = io.BytesIO()
    if image_format == "JPEG":
        image.save(buffer, "JPEG", quality=85)
    else:
        image.save(buffer, "PNG", compress_level=1)
    return buffer.getvalue()


def _line_height(font: ImageFont.FreeTypeFont | ImageFont.ImageFont) -> int:
    _left, top, _right, bottom = font.getbbox("Ag")
    return int(bottom - top) + 4


def _chars_per_line(
    font: ImageFont.FreeTypeFont | ImageFont.ImageFont, width: int, margin: int
) -> int:
    sample = "abcdefghijklmnopqrstuvwxyz "
    average_px = max(1.0, float(font.getlength(sample)) / len(sample))
    return max(4, int((width - 2 * margin) / average_px))


# --------------------------------------------------------------------------- parsing


def _parse_int(name: str, value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool):
        raise _RefusedError(400, f"{name} must be an integer")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            raise _RefusedError(400, f"{name} must be an integer") from None
    raise _RefusedError(400, f"{name} must be an integer")


@dataclass(frozen=True)
class _ImageRequest:
    prompt: str
    seed: int
    width: int
    height: int


def _image_request(fields: Mapping[str, object]) -> _ImageRequest:
    prompt = fields.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise _RefusedError(400, "Prompt is required")
    negative = fields.get("negative_prompt")
    if negative is not None and not isinstance(negative, str):
        raise _RefusedError(400, "negative_prompt must be a string")
    for name in ("steps", "num_steps"):
        _parse_int(name, fields.get(name))
    seed = _parse_int("seed", fields.get("seed"))
    return _ImageRequest(
        prompt=prompt,
        # No seed means seed 0, so the development worker stays deterministic.
        seed=0 if seed is None else seed,
        width=clamp_size(_parse_int("width", fields.get("width"))),
        height=clamp_size(_parse_int("height", fields.get("height"))),
    )


# --------------------------------------------------------------------------- server


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    worker: DevWorker

    def handle_error(self, request: Any, client_address: Any) -> None:
        # The stdlib prints a traceback to stderr; a client that went away is normal.
        logger.debug("development worker: error while serving %s", client_address, exc_info=True)


class _Server6(_Server):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    server_version = "SakaiBotDevWorker/1"
    # An idle keep-alive connection is dropped after this long.
    timeout = 30

    def setup(self) -> None:
        super().setup()
        # Headers and body are separate writes: without this, Nagle's algorithm and
        # delayed ACKs add ~40 ms to every keep-alive answer.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.worker._track(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.worker._untrack(self.connection)

    # http.server's access log goes to stderr; ours goes to logging, without headers.
    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        path = urlsplit(self.path).path
        logger.info("development worker: %s %s -> %s", self.command, path, code)

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("development worker: " + format, *args)

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def _dispatch(self, method: str) -> None:
        try:
            self._route(method)
        except OSError:
            # The client went away or stalled; nothing useful can be sent any more.
            self.close_connection = True
            logger.debug("development worker: connection lost", exc_info=True)

    def _route(self, method: str) -> None:
        worker = self.server.worker
        split = urlsplit(self.path)
        path = split.path.rstrip("/") or "/"
        try:
            # Read the body first, so a keep-alive connection stays in step.
            body = self._read_body()
            if path == "/health":
                if method != "GET":
                    raise _RefusedError(405, "Not allowed")
                self._send_json(200, {"ok": True, "requests": worker.request_count})
                return
            if path == "/flux":
                worker._count_request()
                if method != "GET":
                    raise _RefusedError(405, "Not allowed")
                query = {key: values[0] for key, values in parse_qs(split.query).items()}
                self._answer_image(_image_request(query), "JPEG")
                return
            if path == "/sdxl":
                worker._count_request()
                if method != "POST":
                    raise _RefusedError(405, "Not allowed")
                self._check_bearer()
                self._answer_image(_image_request(self._json_object(body)), "PNG")
                return
            raise _RefusedError(404, "Not found")
        except _RefusedError as exc:
            self._send_json(exc.status, {"error": exc.error})

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding") is not None:
            # Chunked bodies are not read here; drop the connection after refusing.
            self.close_connection = True
            raise _RefusedError(411, "Content-Length is required")
        length_header = self.headers.get("Content-Length")
        if length_header is None:
            return b""
        try:
            length = int(length_header)
        except ValueError:
            self.close_connection = True
            raise _RefusedError(400, "Invalid Content-Length") from None
        if length < 0 or length > MAX_BODY_BYTES:
            self.close_connection = True
            raise _RefusedError(413, "Request body too large")
        return self.rfile.read(length)

    def _check_bearer(self) -> None:
        expected = self.server.worker.config.api_key
        if expected is None:
            return
        scheme, _, token = (self.headers.get("Authorization") or "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            token.strip().encode("utf-8", "replace"), expected.encode("utf-8")
        ):
            raise _RefusedError(401, "Unauthorized")

    @staticmethod
    def _json_object(body: bytes) -> dict[str, object]:
        try:
            parsed = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise _RefusedError(400, "Invalid JSON body") from None
        if not isinstance(parsed, dict):
            raise _RefusedError(400, "Invalid JSON body")
        return parsed

    def _answer_image(self, request: _ImageRequest, image_format: ImageFormat) -> None:
        worker = self.server.worker
        worker._sleep_latency()
        if worker._roll_failure():
            status = worker.config.fail_status
            headers = {"Retry-After": "1"} if status in _RETRY_AFTER_STATUSES else {}
            self._send_json(status, _INJECTED_FAILURE, headers)
            return
        data = worker._image(request, image_format)
        self._send(200, _MIME_TYPES[image_format], data)

    def _send_json(
        self, status: int, payload: object, headers: Mapping[str, str] | None = None
    ) -> None:
        body = json.dumps(payload).encode("utf-8")
        self._send(status, "application/json", body, headers)

    def _send(
        self,
        status: int,
        content_type: str,
        body: bytes,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)


class DevWorker:
    """The development worker: :meth:`start` it, use its URL, :meth:`stop` it.

    ``with DevWorker(config) as url: ...`` starts and stops it too.
    """

    def __init__(self, config: DevWorkerConfig | None = None) -> None:
        self.config = config or DevWorkerConfig()
        self._lock = threading.Lock()
        self._lifecycle = threading.Lock()
        self._rng = random.Random(self.config.seed)
        self._request_count = 0
        self._stopping = threading.Event()
        self._connections: set[socket.socket] = set()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._url: str | None = None
        self._fast_images: dict[ImageFormat, bytes] = {}

    # -- lifecycle

    def start(self) -> str:
        """Start serving in a background thread; returns ``http://HOST:PORT``."""
        with self._lifecycle:
            return self._start_locked()

    def _start_locked(self) -> str:
        if self._server is not None:
            raise RuntimeError("the development worker is already running")
        if self.config.fast:
            self._fast_images = {
                image_format: render_preview(
                    "fast mode: the same image for every prompt",
                    width=FAST_SIZE_PX,
                    height=FAST_SIZE_PX,
                    image_format=image_format,
                )
                for image_format in _MIME_TYPES
            }
        self._stopping.clear()
        server_class = _Server6 if ":" in self.config.host else _Server
        server = server_class((self.config.host, self.config.port), _Handler)
        server.worker = self
        host, port = server.server_address[:2]
        self._server = server
        self._url = f"http://{_host_for_url(str(host))}:{port}"
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"sakaibot-dev-worker-{port}",
            daemon=True,
        )
        self._thread.start()
        logger.info("development worker listening on %s", self._url)
        return self._url

    def stop(self) -> None:
        """Stop serving, drop open connections and wait for the server thread."""
        with self._lifecycle:
            self._stop_locked()

    def _stop_locked(self) -> None:
        server, thread = self._server, self._thread
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        server.server_close()
        with self._lock:
            connections = list(self._connections)
        for connection in connections:
            # Wakes handler threads blocked on an idle keep-alive connection.
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        if thread is not None:
            thread.join()
        self._server = None
        self._thread = None
        logger.info("development worker on %s stopped", self._url)

    def serve_forever(self, on_ready: Callable[[str], None] | None = None) -> None:
        """Serve until interrupted (Ctrl-C) or :meth:`stop` is called from elsewhere."""
        url = self.start()
        if on_ready is not None:
            on_ready(url)
        try:
            self._stopping.wait()
        except KeyboardInterrupt:
            logger.info("development worker interrupted")
        finally:
            self.stop()

    def __enter__(self) -> str:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    # -- state

    @property
    def url(self) -> str:
        """The base URL; only once :meth:`start` has been called."""
        if self._url is None:
            raise RuntimeError("the development worker has not been started")
        return self._url

    @property
    def request_count(self) -> int:
        """Requests to ``/flux`` and ``/sdxl`` so far, refused ones included."""
        with self._lock:
            return self._request_count

    # -- used by the handler threads

    def _count_request(self) -> None:
        with self._lock:
            self._request_count += 1

    def _track(self, connection: socket.socket) -> None:
        with self._lock:
            self._connections.add(connection)

    def _untrack(self, connection: socket.socket) -> None:
        with self._lock:
            self._connections.discard(connection)

    def _sleep_latency(self) -> None:
        if self.config.latency_ms > 0:
            # An event, not time.sleep, so stop() does not wait for sleeping handlers.
            self._stopping.wait(self.config.latency_ms / 1000)

    def _roll_failure(self) -> bool:
        if self.config.fail_rate <= 0.0:
            return False
        with self._lock:
            return self._rng.random() < self.config.fail_rate

    def _image(self, request: _ImageRequest, image_format: ImageFormat) -> bytes:
        if self.config.fast:
            return self._fast_images[image_format]
        return render_preview(
            request.prompt,
            seed=request.seed,
            width=request.width,
            height=request.height,
            image_format=image_format,
        )


def _host_for_url(host: str) -> str:
    return f"[{host}]" if ":" in host else host

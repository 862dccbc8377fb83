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

It also stands in for the prompt enhancer's LLM: ``POST /v1/chat/completions``
answers an OpenAI chat completion whose content is the user's prompt plus
:data:`DEV_LLM_SUFFIX`, and ``GET /v1/models`` lists :data:`DEV_LLM_MODEL`
(any bearer, or none, is accepted there).

Latency and failures can be injected (``latency_ms``, ``fail_rate``,
``fail_status``); the failure dice are seeded, so a run is reproducible.

Fault modes (:data:`FAULT_NAMES`) imitate what real workers do when things go
wrong: error statuses with the common worker's bodies and Workers AI codes, a
hang, a connection reset or a truncated body mid-image, a text or HTML page or
base64 JSON instead of image bytes, an oversized body, a trickling one. One is
picked per run (``DevWorkerConfig.fault``) and can be overridden per request,
in this order: the ``X-SakaiBot-Fault`` header, the ``fault`` query parameter,
a ``[fault:NAME]`` marker in the prompt (it travels through the whole bot).
``NAME*N`` applies the fault to the first N requests with that exact prompt
only, then they succeed. The LLM endpoint takes :data:`LLM_FAULT_NAMES` from an
``[llm:NAME]`` marker in the user message or the ``X-SakaiBot-LLM-Fault``
header. :attr:`DevWorker.served` records what every request got.
Only the standard library and Pillow are used.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import hmac
import io
import json
import logging
import random
import re
import select
import socket
import struct
import textwrap
import threading
import time
import unicodedata
from collections.abc import Callable, Iterator, Mapping, Sequence
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

#: Request header that picks a fault for one image request (or LLM request).
FAULT_HEADER = "X-SakaiBot-Fault"
#: Request header that picks an LLM fault (takes precedence over ``FAULT_HEADER``).
LLM_FAULT_HEADER = "X-SakaiBot-LLM-Fault"
#: Query parameter that picks a fault for one image request.
FAULT_QUERY_PARAMETER = "fault"
#: The one model ``GET /v1/models`` lists (any model name is accepted, though).
DEV_LLM_MODEL = "sakaibot-dev"
#: What the development LLM appends to the user's prompt: fixed and labelled.
DEV_LLM_SUFFIX = ", development LLM: soft light, rich detail"

DEFAULT_OVERSIZED_BYTES = 30_000_000
DEFAULT_TRICKLE_DELAY_MS = 200
#: A trickled image arrives in this many pieces (so 200 ms apart: about 3 s).
TRICKLE_CHUNKS = 16
_STREAM_CHUNK_BYTES = 64 * 1024
#: The longest a ``timeout`` fault hangs (longer than any sane client timeout).
HANG_MAX_S = 600.0
#: How often a hanging handler looks at its client and the stop flag.
_HANG_POLL_S = 0.1
#: Pause between the partial body and the reset, so the client is mid-body.
_RESET_PAUSE_S = 0.05
#: How long stop() waits for handler threads to notice and finish.
_STOP_GRACE_S = 2.0


@dataclass(frozen=True)
class _ErrorFault:
    status: int
    error: str
    details: str
    headers: tuple[tuple[str, str], ...] = ()


def _tag(name: str) -> str:
    return f"(development worker fault {name})"


#: Faults answered with a JSON error body like the common public worker's.
_ERROR_FAULTS: dict[str, _ErrorFault] = {
    "400": _ErrorFault(400, "Bad request", f"3003: Bad input: incomplete request {_tag('400')}"),
    "401": _ErrorFault(401, "Unauthorized", f"missing or wrong bearer token {_tag('401')}"),
    "405": _ErrorFault(405, "Not allowed", f"method or path not allowed {_tag('405')}"),
    "408": _ErrorFault(408, "Request timeout", f"3007: Request timeout {_tag('408')}"),
    "413": _ErrorFault(413, "Request too large", f"3006: Request is too large {_tag('413')}"),
    "429": _ErrorFault(
        429,
        "Failed to generate image",
        f"3040: Out of capacity for this model, please try again later {_tag('429')}",
    ),
    "429-quota": _ErrorFault(
        429,
        "Failed to generate image",
        "3036: Account limited: you have used up your daily free allocation of 10,000 "
        "neurons, please upgrade to Cloudflare's Workers Paid plan if you would like to "
        f"continue usage {_tag('429-quota')}",
    ),
    "500": _ErrorFault(500, "Failed to generate image", f"internal error {_tag('500')}"),
    "500-nsfw": _ErrorFault(
        500,
        "Failed to generate image",
        f"NSFW content detected: the output was filtered by the safety checker {_tag('500-nsfw')}",
    ),
    "500-capacity": _ErrorFault(
        500, "Failed to generate image", f"3040: Out of capacity {_tag('500-capacity')}"
    ),
    "502": _ErrorFault(502, "Bad gateway", f"the model backend did not answer {_tag('502')}"),
    "503": _ErrorFault(503, "Service unavailable", f"temporarily overloaded {_tag('503')}"),
    "504": _ErrorFault(504, "Gateway timeout", f"the model backend timed out {_tag('504')}"),
    "retry-after": _ErrorFault(
        503,
        "Service unavailable",
        f"temporarily overloaded, retry in 2 seconds {_tag('retry-after')}",
        (("Retry-After", "2"),),
    ),
}

#: Every image fault name, ``ok`` (no fault) first.
FAULT_NAMES: tuple[str, ...] = (
    "ok",
    *_ERROR_FAULTS,
    "timeout",
    "reset",
    "truncated",
    "text",
    "html",
    "json",
    "json-result",
    "oversized",
    "trickle",
)
#: Every fault name of the development LLM, ``ok`` first.
LLM_FAULT_NAMES: tuple[str, ...] = (
    "ok",
    "timeout",
    "500",
    "401",
    "429",
    "empty",
    "garbage",
    "short",
)

_FAULT_MARKER = re.compile(r"\[fault:\s*([^\[\]]*?)\s*\]", re.IGNORECASE)
_LLM_MARKER = re.compile(r"\[llm:\s*([^\[\]]*?)\s*\]", re.IGNORECASE)
_FAULT_SPEC = re.compile(r"^(?P<name>[a-z0-9-]+)(?:\*(?P<limit>[0-9]{1,9}))?$")

_HTML_PAGE = (
    b"<!DOCTYPE html>\n<html><head><title>SakaiBot development worker</title></head>"
    b"<body><h1>Hello from the development worker</h1>"
    b"<p>This page is not an image (development worker fault html).</p></body></html>\n"
)
_LLM_GARBAGE = b"<html><body>development LLM: this is not JSON (fault garbage)</body></html>"


@dataclass(frozen=True)
class FaultSpec:
    """A parsed fault: ``NAME`` or ``NAME*N`` (only the first N requests per prompt)."""

    name: str
    #: ``None``: every request; N: the first N requests carrying the same prompt.
    limit: int | None = None

    @property
    def text(self) -> str:
        return self.name if self.limit is None else f"{self.name}*{self.limit}"


def parse_fault(text: str, known: Sequence[str] = FAULT_NAMES) -> FaultSpec:
    """``NAME`` or ``NAME*N`` (N >= 1) with a name from ``known``; ValueError otherwise."""
    match = _FAULT_SPEC.match(text.strip().lower())
    if match is None or match["name"] not in known:
        raise ValueError(f"unknown fault {text.strip()!r}; known: {', '.join(known)}")
    limit = None if match["limit"] is None else int(match["limit"])
    if limit is not None and limit < 1:
        raise ValueError(f"a fault's repeat count must be at least 1, not {limit}")
    return FaultSpec(match["name"], limit)


def strip_markers(prompt: str) -> str:
    """``prompt`` without ``[fault:...]`` and ``[llm:...]`` markers (unchanged if none)."""
    if "[" not in prompt:
        return prompt
    stripped = _LLM_MARKER.sub(" ", _FAULT_MARKER.sub(" ", prompt))
    return prompt if stripped == prompt else " ".join(stripped.split())


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
    #: The fault every image request gets unless it picks its own
    #: (``NAME`` or ``NAME*N`` from :data:`FAULT_NAMES`).
    fault: str = "ok"
    #: Body size of the ``oversized`` fault.
    oversized_bytes: int = DEFAULT_OVERSIZED_BYTES
    #: Pause between the pieces of the ``trickle`` fault.
    trickle_delay_ms: int = DEFAULT_TRICKLE_DELAY_MS

    def __post_init__(self) -> None:
        parse_fault(self.fault)  # raises ValueError for an unknown fault
        if self.oversized_bytes < 1:
            raise ValueError(f"oversized_bytes must be positive, not {self.oversized_bytes}")
        if self.trickle_delay_ms < 0:
            raise ValueError(f"trickle_delay_ms must not be negative, not {self.trickle_delay_ms}")
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

    def __init__(self, status: int, error: str, details: str | None = None) -> None:
        super().__init__(error)
        self.status = status
        self.error = error
        self.details = details


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


_IMAGE_PATHS = frozenset({"/flux", "/sdxl"})
_LLM_CHAT_PATH = "/v1/chat/completions"
_LLM_MODELS_PATH = "/v1/models"
_LLM_PATHS = frozenset({_LLM_CHAT_PATH, _LLM_MODELS_PATH})


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
                query = _query(split.query)
                self._answer_image(path, _image_request(query), "JPEG", query)
                return
            if path == "/sdxl":
                worker._count_request()
                if method != "POST":
                    raise _RefusedError(405, "Not allowed")
                self._check_bearer()
                request = _image_request(self._json_object(body))
                self._answer_image(path, request, "PNG", _query(split.query))
                return
            if path == _LLM_CHAT_PATH:
                if method != "POST":
                    raise _RefusedError(405, "Not allowed")
                self._answer_chat(path, body)
                return
            if path == _LLM_MODELS_PATH:
                if method != "GET":
                    raise _RefusedError(405, "Not allowed")
                worker._record_served(path, "ok")
                self._send_json(200, _models_list())
                return
            raise _RefusedError(404, "Not found")
        except _RefusedError as exc:
            if path in _IMAGE_PATHS or path in _LLM_PATHS:
                worker._record_served(path, f"refused:{exc.status}")
            if path in _LLM_PATHS:
                self._send_json(exc.status, _openai_error(exc.error, exc.details))
                return
            payload = {"error": exc.error}
            if exc.details is not None:
                payload["details"] = exc.details
            self._send_json(exc.status, payload)

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

    # -- fault selection

    def _select_fault(
        self,
        prompt: str,
        *,
        query: Mapping[str, str],
        llm: bool,
    ) -> str:
        """The fault this request gets (``"ok"`` for none); 400 for an unknown one.

        Header, then query parameter (image requests), then prompt marker, then
        the run's fault (image requests); ``NAME*N`` is counted per prompt.
        """
        worker = self.server.worker
        known = LLM_FAULT_NAMES if llm else FAULT_NAMES
        headers = (LLM_FAULT_HEADER, FAULT_HEADER) if llm else (FAULT_HEADER,)
        raw: str | None = None
        for header in headers:
            value = self.headers.get(header)
            if value is not None and value.strip():
                raw = value
                break
        if raw is None and not llm:
            value = query.get(FAULT_QUERY_PARAMETER)
            if value is not None and value.strip():
                raw = value
        if raw is None:
            marker = (_LLM_MARKER if llm else _FAULT_MARKER).search(prompt)
            if marker is not None:
                raw = marker[1]
        if raw is None:
            raw = "ok" if llm else worker.config.fault
        try:
            spec = parse_fault(raw, known)
        except ValueError:
            raise _RefusedError(
                400, f"unknown fault {raw.strip()}", f"known: {', '.join(known)}"
            ) from None
        if spec.name == "ok":
            return "ok"
        kind = "llm" if llm else "image"
        return spec.name if worker._fault_applies(kind, spec, prompt) else "ok"

    # -- images

    def _answer_image(
        self,
        path: str,
        request: _ImageRequest,
        image_format: ImageFormat,
        query: Mapping[str, str],
    ) -> None:
        worker = self.server.worker
        fault = self._select_fault(request.prompt, query=query, llm=False)
        worker._sleep_latency()
        if fault == "ok" and worker._roll_failure():
            status = worker.config.fail_status
            worker._record_served(path, f"fail-rate:{status}")
            headers = {"Retry-After": "1"} if status in _RETRY_AFTER_STATUSES else {}
            self._send_json(status, _INJECTED_FAILURE, headers)
            return
        worker._record_served(path, fault)
        if fault == "ok":
            data = worker._image(request, image_format)
            self._send(200, _MIME_TYPES[image_format], data)
            return
        logger.info("development worker: %s %s -> fault %s", self.command, path, fault)
        self._serve_fault(fault, request, image_format)

    def _serve_fault(self, fault: str, request: _ImageRequest, image_format: ImageFormat) -> None:
        worker = self.server.worker
        error = _ERROR_FAULTS.get(fault)
        if error is not None:
            body = {"error": error.error, "details": error.details}
            self._send_json(error.status, body, dict(error.headers))
        elif fault == "timeout":
            self._hang(HANG_MAX_S)
            # Stopped, the client left, or the hang ran out: never answer.
            self.close_connection = True
        elif fault == "text":
            self._send(200, "text/plain; charset=utf-8", b"missing prompt")
        elif fault == "html":
            self._send(200, "text/html; charset=utf-8", _HTML_PAGE)
        elif fault in ("json", "json-result"):
            encoded = base64.b64encode(worker._image(request, "JPEG")).decode("ascii")
            payload: dict[str, object] = (
                {"image": encoded}
                if fault == "json"
                else {"result": {"image": encoded}, "success": True, "errors": [], "messages": []}
            )
            self._send_json(200, payload)
        elif fault == "reset":
            data = worker._image(request, image_format)
            self._send_head(200, _MIME_TYPES[image_format], len(data))
            self.wfile.write(data[: len(data) // 2])
            self._hang(_RESET_PAUSE_S)
            self._reset_connection()
        elif fault == "truncated":
            data = worker._image(request, image_format)
            self.close_connection = True
            self._send_head(200, _MIME_TYPES[image_format], len(data))
            # Three quarters of what was announced, then an orderly close.
            self.wfile.write(data[: len(data) * 3 // 4])
        elif fault == "oversized":
            self._serve_oversized(worker._image(request, "JPEG"), worker.config.oversized_bytes)
        elif fault == "trickle":
            data = worker._image(request, image_format)
            self._serve_trickle(data, _MIME_TYPES[image_format], worker.config.trickle_delay_ms)
        else:  # pragma: no cover - FAULT_NAMES and this method are kept in step
            raise AssertionError(f"unhandled fault {fault}")

    def _serve_oversized(self, image: bytes, size: int) -> None:
        stopping = self.server.worker._stopping
        self._send_head(200, "image/jpeg", size)
        for chunk in _padded_chunks(image, size):
            if stopping.is_set():
                self._reset_connection()
                return
            self.wfile.write(chunk)

    def _serve_trickle(self, data: bytes, content_type: str, delay_ms: int) -> None:
        self._send_head(200, content_type, len(data))
        piece = max(1, -(-len(data) // TRICKLE_CHUNKS))
        for offset in range(0, len(data), piece):
            if offset and self._hang(delay_ms / 1000):
                # Stopped or the client left: the rest is never sent.
                self._reset_connection()
                return
            self.wfile.write(data[offset : offset + piece])

    # -- the development LLM

    def _answer_chat(self, path: str, body: bytes) -> None:
        worker = self.server.worker
        payload = self._json_object(body)
        model = payload.get("model")
        messages = payload.get("messages")
        if not isinstance(model, str) or not model.strip():
            raise _RefusedError(400, "model is required")
        if not isinstance(messages, list) or not messages:
            raise _RefusedError(400, "messages is required")
        prompt = _last_user_text(messages)
        fault = self._select_fault(prompt, query={}, llm=True)
        worker._record_served(path, fault)
        if fault != "ok":
            logger.info("development worker: %s %s -> LLM fault %s", self.command, path, fault)
        if fault == "ok":
            self._send_json(200, _chat_completion(_enhance(prompt), model, prompt))
        elif fault == "empty":
            self._send_json(200, _chat_completion("", model, prompt))
        elif fault == "short":
            self._send_json(200, _chat_completion("ok", model, prompt))
        elif fault == "garbage":
            self._send(200, "application/json", _LLM_GARBAGE)
        elif fault == "timeout":
            self._hang(HANG_MAX_S)
            self.close_connection = True
        elif fault == "500":
            error = _openai_error(
                "development LLM: internal error (fault 500)", type_="server_error"
            )
            self._send_json(500, error)
        elif fault == "401":
            message = "development LLM: invalid API key (fault 401)"
            error = _openai_error(message, code="invalid_api_key")
            self._send_json(401, error)
        elif fault == "429":
            message = "development LLM: rate limit reached (fault 429)"
            error = _openai_error(message, type_="rate_limit_error", code="rate_limit_exceeded")
            self._send_json(429, error, {"Retry-After": "1"})
        else:  # pragma: no cover - LLM_FAULT_NAMES and this method are kept in step
            raise AssertionError(f"unhandled LLM fault {fault}")

    # -- low-level answers

    def _hang(self, seconds: float) -> bool:
        """Wait up to ``seconds``; True if cut short because of stop() or a gone client."""
        stopping = self.server.worker._stopping
        deadline = time.monotonic() + seconds
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            if stopping.wait(min(remaining, _HANG_POLL_S)):
                return True
            if self._client_gone():
                return True

    def _client_gone(self) -> bool:
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            if not readable:
                return False
            # Readable with nothing to read: the client closed its end.
            return bool(self.connection.recv(1, socket.MSG_PEEK) == b"")
        except (OSError, ValueError):
            return True

    def _reset_connection(self) -> None:
        """Drop the connection with a TCP reset instead of an orderly close."""
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        # The descriptor is released (with the reset) once the handler's reader
        # is closed in finish(); later shutdown/close calls are then no-ops.
        self.connection.close()

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
        self._send_head(status, content_type, len(body), headers)
        self.wfile.write(body)

    def _send_head(
        self,
        status: int,
        content_type: str,
        length: int,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(length))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()


def _query(raw: str) -> dict[str, str]:
    return {key: values[0] for key, values in parse_qs(raw).items()}


def _padded_chunks(image: bytes, size: int) -> Iterator[bytes]:
    """``size`` bytes: the image, then zero padding (decoders ignore what follows EOI)."""
    head = image[:size]
    for offset in range(0, len(head), _STREAM_CHUNK_BYTES):
        yield head[offset : offset + _STREAM_CHUNK_BYTES]
    left = size - len(head)
    zeros = bytes(_STREAM_CHUNK_BYTES)
    while left > 0:
        chunk = zeros if left >= len(zeros) else zeros[:left]
        yield chunk
        left -= len(chunk)


def _message_text(content: object) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # [{"type": "text", "text": "..."}, ...]
        parts = [
            part["text"]
            for part in content
            if isinstance(part, dict) and isinstance(part.get("text"), str)
        ]
        return " ".join(parts)
    return ""


def _last_user_text(messages: Sequence[object]) -> str:
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            return _message_text(message.get("content"))
    return ""


def _enhance(prompt: str) -> str:
    """The development LLM's deterministic "enhancement": the prompt, labelled."""
    base = " ".join(_LLM_MARKER.sub(" ", prompt).split())
    return f"{base}{DEV_LLM_SUFFIX}" if base else DEV_LLM_SUFFIX.lstrip(", ")


def _chat_completion(content: str, model: str, prompt: str) -> dict[str, object]:
    digest = hashlib.sha256(f"{model}\x00{prompt}\x00{content}".encode("utf-8", "replace"))
    prompt_tokens = len(prompt.split()) + 1
    completion_tokens = len(content.split())
    return {
        "id": f"chatcmpl-sakaibot-dev-{digest.hexdigest()[:16]}",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": "stop",
                "logprobs": None,
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


def _models_list() -> dict[str, object]:
    return {
        "object": "list",
        "data": [
            {
                "id": DEV_LLM_MODEL,
                "object": "model",
                "created": 1_700_000_000,
                "owned_by": "sakaibot",
            }
        ],
    }


def _openai_error(
    message: str,
    details: str | None = None,
    *,
    type_: str = "invalid_request_error",
    code: str | None = None,
) -> dict[str, object]:
    error: dict[str, object] = {"message": message, "type": type_, "param": None, "code": code}
    if details is not None:
        error["details"] = details
    return {"error": error}


class DevWorker:
    """The development worker: :meth:`start` it, use its URL, :meth:`stop` it.

    ``with DevWorker(config) as url: ...`` starts and stops it too.
    """

    def __init__(self, config: DevWorkerConfig | None = None) -> None:
        self.config = config or DevWorkerConfig()
        self._lock = threading.Lock()
        # Signalled whenever a connection is untracked (stop() waits on it).
        self._idle = threading.Condition(self._lock)
        self._lifecycle = threading.Lock()
        self._rng = random.Random(self.config.seed)
        self._request_count = 0
        self._served: list[tuple[str, str]] = []
        self._fault_counts: dict[tuple[str, str, str], int] = {}
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
            # shutdown() waits for the loop to notice, up to one poll interval.
            kwargs={"poll_interval": 0.01},
            name=f"sakaibot-dev-worker-{port}",
            daemon=True,
        )
        self._thread.start()
        logger.info("development worker listening on %s", self._url)
        return self._url

    def stop(self) -> None:
        """Stop serving, drop open connections and wait for the server thread.

        Handlers that hang or trickle (fault modes) notice within a fraction of
        a second; stop() waits for them briefly, so none outlives it in practice.
        """
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
        with self._idle:
            if not self._idle.wait_for(lambda: not self._connections, timeout=_STOP_GRACE_S):
                logger.warning("development worker: some handlers are still busy after stop")
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

    @property
    def served(self) -> list[tuple[str, str]]:
        """``(path, what)`` per image and LLM request so far, oldest first (a copy).

        ``what`` is the fault served (``"503"``, ``"timeout"``, ...) or ``"ok"``;
        ``"fail-rate:STATUS"`` for a ``fail_rate`` failure and ``"refused:STATUS"``
        for a request refused before any fault applied (401, 400, 405, ...).
        Recorded before the answer is sent, so a hanging request is already there.
        """
        with self._lock:
            return list(self._served)

    # -- used by the handler threads

    def _count_request(self) -> None:
        with self._lock:
            self._request_count += 1

    def _record_served(self, path: str, what: str) -> None:
        with self._lock:
            self._served.append((path, what))

    def _fault_applies(self, kind: str, spec: FaultSpec, prompt: str) -> bool:
        if spec.limit is None:
            return True
        key = (kind, spec.text, prompt)
        with self._lock:
            used = self._fault_counts.get(key, 0)
            if used >= spec.limit:
                return False
            self._fault_counts[key] = used + 1
            return True

    def _track(self, connection: socket.socket) -> None:
        with self._lock:
            self._connections.add(connection)
        if self._stopping.is_set():
            # Accepted while stop() was running: do not let it sit idle.
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    def _untrack(self, connection: socket.socket) -> None:
        with self._idle:
            self._connections.discard(connection)
            self._idle.notify_all()

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
            strip_markers(request.prompt),
            seed=request.seed,
            width=request.width,
            height=request.height,
            image_format=image_format,
        )


def _host_for_url(host: str) -> str:
    return f"[{host}]" if ":" in host else host

"""The development worker's image faults: the catalogue as data, and how each is served.

A fault imitates what a real worker does when things go wrong: an error status
with the common worker's JSON body and a Workers AI code, a hang, a connection
reset or a truncated body mid-image, a text or HTML page or base64 JSON instead
of image bytes, an oversized body, a trickling one. :data:`FAULT_NAMES` lists
them; :func:`serve_fault` serves one on a :class:`Reply`, the few things a fault
needs from the connection it answers on (the server's request handler is one).

Which fault a request gets is chosen from, in this order, a header, a query
parameter, a ``[fault:NAME]`` marker in the prompt and the run's fault;
``NAME*N`` limits a fault to the first N requests with the same prompt
(:func:`requested_fault`, :func:`parse_fault`).
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from sakaibot.devworker.previews import MIME_TYPES, ImageFormat

#: Request header that picks a fault for one image request (or LLM request).
FAULT_HEADER = "X-SakaiBot-Fault"
#: Request header that picks an LLM fault (takes precedence over ``FAULT_HEADER``).
LLM_FAULT_HEADER = "X-SakaiBot-LLM-Fault"
#: Query parameter that picks a fault for one image request.
FAULT_QUERY_PARAMETER = "fault"

DEFAULT_OVERSIZED_BYTES = 30_000_000
DEFAULT_TRICKLE_DELAY_MS = 200
#: A trickled image arrives in this many pieces (so 200 ms apart: about 3 s).
TRICKLE_CHUNKS = 16
#: The longest a ``timeout`` fault hangs (longer than any sane client timeout).
HANG_MAX_S = 600.0
#: Pause between the partial body and the reset, so the client is mid-body.
RESET_PAUSE_S = 0.05
_STREAM_CHUNK_BYTES = 64 * 1024

#: ``[fault:NAME]`` in a prompt picks an image fault; ``[llm:NAME]`` an LLM fault.
FAULT_MARKER = re.compile(r"\[fault:\s*([^\[\]]*?)\s*\]", re.IGNORECASE)
LLM_MARKER = re.compile(r"\[llm:\s*([^\[\]]*?)\s*\]", re.IGNORECASE)
_FAULT_SPEC = re.compile(r"^(?P<name>[a-z0-9-]+)(?:\*(?P<limit>[0-9]{1,9}))?$")


class Reply(Protocol):
    """What a fault needs from the connection it answers on."""

    def send(
        self,
        status: int,
        content_type: str,
        body: bytes,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """A whole answer: status, headers with the body's length, then the body."""

    def send_json(
        self, status: int, payload: object, headers: Mapping[str, str] | None = None
    ) -> None:
        """A whole JSON answer."""

    def send_head(
        self,
        status: int,
        content_type: str,
        length: int,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """Status and headers announcing ``length`` body bytes; the body follows by write()."""

    def write(self, data: bytes) -> None:
        """Body bytes after send_head()."""

    def close_after(self) -> None:
        """Close the connection once this answer is done (no keep-alive)."""

    def pause(self, seconds: float) -> bool:
        """Wait up to ``seconds``; True if cut short because the worker stops or the client left."""

    def stopping(self) -> bool:
        """Whether the worker is stopping."""

    def reset(self) -> None:
        """Drop the connection with a TCP reset instead of an orderly close."""


@dataclass(frozen=True)
class FaultRequest:
    """The image request a fault answers, and the run's settings for the slow faults."""

    #: The request's preview in a given format (rendered on demand).
    render: Callable[[ImageFormat], bytes]
    #: The format the contract answers with (JPEG for Flux, PNG for SDXL).
    image_format: ImageFormat
    oversized_bytes: int = DEFAULT_OVERSIZED_BYTES
    trickle_delay_ms: int = DEFAULT_TRICKLE_DELAY_MS


@dataclass(frozen=True)
class ErrorFault:
    """A fault answered with a JSON error body like the common public worker's."""

    status: int
    error: str
    details: str
    headers: tuple[tuple[str, str], ...] = ()


def _tag(name: str) -> str:
    return f"(development worker fault {name})"


#: The error faults, by name: what real workers and Workers AI answer.
ERROR_FAULTS: Mapping[str, ErrorFault] = {
    "400": ErrorFault(400, "Bad request", f"3003: Bad input: incomplete request {_tag('400')}"),
    "401": ErrorFault(401, "Unauthorized", f"missing or wrong bearer token {_tag('401')}"),
    "405": ErrorFault(405, "Not allowed", f"method or path not allowed {_tag('405')}"),
    "408": ErrorFault(408, "Request timeout", f"3007: Request timeout {_tag('408')}"),
    "413": ErrorFault(413, "Request too large", f"3006: Request is too large {_tag('413')}"),
    "429": ErrorFault(
        429,
        "Failed to generate image",
        f"3040: Out of capacity for this model, please try again later {_tag('429')}",
    ),
    "429-quota": ErrorFault(
        429,
        "Failed to generate image",
        "3036: Account limited: you have used up your daily free allocation of 10,000 "
        "neurons, please upgrade to Cloudflare's Workers Paid plan if you would like to "
        f"continue usage {_tag('429-quota')}",
    ),
    "500": ErrorFault(500, "Failed to generate image", f"internal error {_tag('500')}"),
    "500-nsfw": ErrorFault(
        500,
        "Failed to generate image",
        f"NSFW content detected: the output was filtered by the safety checker {_tag('500-nsfw')}",
    ),
    "500-capacity": ErrorFault(
        500, "Failed to generate image", f"3040: Out of capacity {_tag('500-capacity')}"
    ),
    "502": ErrorFault(502, "Bad gateway", f"the model backend did not answer {_tag('502')}"),
    "503": ErrorFault(503, "Service unavailable", f"temporarily overloaded {_tag('503')}"),
    "504": ErrorFault(504, "Gateway timeout", f"the model backend timed out {_tag('504')}"),
    "retry-after": ErrorFault(
        503,
        "Service unavailable",
        f"temporarily overloaded, retry in 2 seconds {_tag('retry-after')}",
        (("Retry-After", "2"),),
    ),
}

_HTML_PAGE = (
    b"<!DOCTYPE html>\n<html><head><title>SakaiBot development worker</title></head>"
    b"<body><h1>Hello from the development worker</h1>"
    b"<p>This page is not an image (development worker fault html).</p></body></html>\n"
)

FaultAnswer = Callable[[Reply, FaultRequest], None]


def _error(fault: ErrorFault) -> FaultAnswer:
    def answer(reply: Reply, request: FaultRequest) -> None:
        body = {"error": fault.error, "details": fault.details}
        reply.send_json(fault.status, body, dict(fault.headers))

    return answer


def _timeout(reply: Reply, request: FaultRequest) -> None:
    reply.pause(HANG_MAX_S)
    # Stopped, the client left, or the hang ran out: never answer.
    reply.close_after()


def _reset(reply: Reply, request: FaultRequest) -> None:
    data = request.render(request.image_format)
    reply.send_head(200, MIME_TYPES[request.image_format], len(data))
    reply.write(data[: len(data) // 2])
    reply.pause(RESET_PAUSE_S)
    reply.reset()


def _truncated(reply: Reply, request: FaultRequest) -> None:
    data = request.render(request.image_format)
    reply.close_after()
    reply.send_head(200, MIME_TYPES[request.image_format], len(data))
    # Three quarters of what was announced, then an orderly close.
    reply.write(data[: len(data) * 3 // 4])


def _text(reply: Reply, request: FaultRequest) -> None:
    reply.send(200, "text/plain; charset=utf-8", b"missing prompt")


def _html(reply: Reply, request: FaultRequest) -> None:
    reply.send(200, "text/html; charset=utf-8", _HTML_PAGE)


def _json(reply: Reply, request: FaultRequest) -> None:
    reply.send_json(200, {"image": _base64_jpeg(request)})


def _json_result(reply: Reply, request: FaultRequest) -> None:
    result = {"image": _base64_jpeg(request)}
    reply.send_json(200, {"result": result, "success": True, "errors": [], "messages": []})


def _base64_jpeg(request: FaultRequest) -> str:
    return base64.b64encode(request.render("JPEG")).decode("ascii")


def _oversized(reply: Reply, request: FaultRequest) -> None:
    size = request.oversized_bytes
    reply.send_head(200, "image/jpeg", size)
    for chunk in _padded_chunks(request.render("JPEG"), size):
        if reply.stopping():
            reply.reset()
            return
        reply.write(chunk)


def _trickle(reply: Reply, request: FaultRequest) -> None:
    data = request.render(request.image_format)
    reply.send_head(200, MIME_TYPES[request.image_format], len(data))
    piece = max(1, -(-len(data) // TRICKLE_CHUNKS))
    for offset in range(0, len(data), piece):
        if offset and reply.pause(request.trickle_delay_ms / 1000):
            # Stopped or the client left: the rest is never sent.
            reply.reset()
            return
        reply.write(data[offset : offset + piece])


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


#: Every image fault and how it is served, in the order the docs list them.
_ANSWERS: Mapping[str, FaultAnswer] = {
    **{name: _error(fault) for name, fault in ERROR_FAULTS.items()},
    "timeout": _timeout,
    "reset": _reset,
    "truncated": _truncated,
    "text": _text,
    "html": _html,
    "json": _json,
    "json-result": _json_result,
    "oversized": _oversized,
    "trickle": _trickle,
}

#: Every image fault name, ``ok`` (no fault) first.
FAULT_NAMES: tuple[str, ...] = ("ok", *_ANSWERS)


def serve_fault(name: str, reply: Reply, request: FaultRequest) -> None:
    """Answer ``request`` on ``reply`` the way fault ``name`` (not ``ok``) does."""
    _ANSWERS[name](reply, request)


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


def requested_fault(
    explicit: Iterable[str | None], prompt: str, marker: re.Pattern[str], default: str
) -> str:
    """The fault a request asks for, as written (parse it with :func:`parse_fault`).

    The first ``explicit`` value that is not blank (headers, then the query
    parameter), else the prompt's marker (a blank one is then an unknown
    fault), else ``default``.
    """
    for value in explicit:
        if value is not None and value.strip():
            return value
    found = marker.search(prompt)
    return default if found is None else found[1]


def strip_markers(prompt: str) -> str:
    """``prompt`` without ``[fault:...]`` and ``[llm:...]`` markers (unchanged if none)."""
    if "[" not in prompt:
        return prompt
    stripped = LLM_MARKER.sub(" ", FAULT_MARKER.sub(" ", prompt))
    return prompt if stripped == prompt else " ".join(stripped.split())

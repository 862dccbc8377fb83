"""The httpx adapter for both worker contracts (``docs/image-generation/configuration.md``).

This is the one module that talks HTTP to image workers. Every httpx error
and every unhappy response is translated here, exactly once, into the
exception tree of :mod:`sakaibot.errors`; transient ones are retried with
tenacity inside a time budget measured on an injected clock, and
:meth:`WorkerClient.generate` is the ``(success, data, error)`` boundary.

Deadlines: httpx's read timeout only bounds the pause between two chunks, so
a worker that trickles its body a byte at a time would never trip it. Each
attempt therefore also has an overall deadline (``attempt_timeout_s``, by
default the connect timeout plus the read timeout: time to connect, then time
for the worker to make the image and send it), and no attempt runs past what
is left of the retry budget: the budget bounds the whole generation, retries
and waits included.

Nothing secret is logged: log lines carry the model name, the status code
and the URL host only, never the query string (it holds the prompt) or any
header (one holds the API key).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import math
import random
import re
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from importlib.metadata import PackageNotFoundError, version
from typing import Any, NoReturn

import httpx
from tenacity import AsyncRetrying, RetryCallState, RetryError, retry_if_exception_type

from sakaibot.errors import (
    ContentFiltered,
    GenerationError,
    ImageTooLarge,
    InvalidImage,
    QuotaExhausted,
    TransientWorkerError,
    WorkerAuthError,
    WorkerBadRequest,
    WorkerGaveUp,
    WorkerTimeout,
)
from sakaibot.generation import GeneratedImage, GenerationParams, GenerationResult
from sakaibot.models import Contract, ModelSpec
from sakaibot.workers.images import inspect_image

logger = logging.getLogger(__name__)

#: How much of an error body is kept in an exception's detail.
DETAIL_MAX_CHARS = 300
#: How much of an error body is read at all; the rest is never downloaded.
_ERROR_BODY_MAX_BYTES = 8192
#: Backoff between attempts when the worker gives no Retry-After.
BACKOFF_INITIAL_S = 1.0
BACKOFF_MAX_S = 30.0

_FILTERED = re.compile(r"nsfw|safety|filtered|moderation", re.IGNORECASE)
_QUOTA = re.compile(r"\b3036\b|daily free allocation|neurons", re.IGNORECASE)
_DATA_URL = re.compile(r"^data:[\w.+-]+/[\w.+-]+(?:;[\w.+-]+=[\w.+-]+)*;base64,", re.IGNORECASE)
_WHITESPACE = re.compile(r"\s+")

_TRANSIENT_STATUSES = frozenset({408, 502, 503, 504})


def _user_agent() -> str:
    try:
        package_version = version("sakaibot")
    except PackageNotFoundError:
        package_version = "0+unknown"
    return f"SakaiBot/{package_version}"


def build_http_client(*, connect_timeout_s: float, read_timeout_s: float) -> httpx.AsyncClient:
    """The one AsyncClient every worker call shares (built by the app factory).

    Write gets the read timeout (an upload of a JSON prompt is tiny; a slow
    write means the worker is stuck), and waiting for a pooled connection gets
    the connect timeout.
    """
    return httpx.AsyncClient(
        timeout=httpx.Timeout(
            connect=connect_timeout_s,
            read=read_timeout_s,
            write=read_timeout_s,
            pool=connect_timeout_s,
        ),
        # Each model runs a handful of generations at a time at most; every
        # connection may stay open between them, so a busy queue never reconnects.
        limits=httpx.Limits(max_connections=32, max_keepalive_connections=32, keepalive_expiry=60),
        # One image per request and connection: HTTP/1.1 keep-alive is all it needs.
        http1=True,
        http2=False,
        headers={"User-Agent": _user_agent()},
        # A redirect means a misconfigured worker URL; following it could send
        # the bearer key to another host.
        follow_redirects=False,
    )


def _transient(detail: str, model_name: str, response: httpx.Response) -> TransientWorkerError:
    """A retryable failure that carries the worker's Retry-After, if it sent one."""
    return TransientWorkerError(
        detail,
        model=model_name,
        retry_after_s=parse_retry_after(response.headers.get("retry-after")),
    )


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    current = now if now is not None else datetime.now(UTC)
    return max(0.0, (when - current).total_seconds())


def _redact(text: str, model: ModelSpec) -> str:
    """Belt and braces: a worker that echoes our bearer key must not leak it."""
    if model.api_key is not None:
        secret = model.api_key.get_secret_value()
        if secret:
            text = text.replace(secret, "***")
    return text


def _shorten(text: str, limit: int = DETAIL_MAX_CHARS) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _describe_body(body: bytes) -> str:
    """The readable part of an error body: ``error: details`` of JSON, else the text."""
    text = body.decode("utf-8", errors="replace")
    try:
        payload = json.loads(text)
    except (ValueError, RecursionError):  # RecursionError: nested too deeply
        return text
    if isinstance(payload, dict):
        parts: list[str] = []
        for key in ("error", "details", "message"):
            value = payload.get(key)
            if value:
                parts.append(value if isinstance(value, str) else json.dumps(value))
        # Raw Workers AI answers: {"errors": [{"code": 3040, "message": "..."}], ...}
        errors = payload.get("errors")
        if isinstance(errors, list):
            for item in errors:
                if isinstance(item, dict):
                    parts.append(f"{item.get('code', '')} {item.get('message', '')}".strip())
        if parts:
            return ": ".join(parts)
    return text


def _media_type(response: httpx.Response) -> str:
    content_type = str(response.headers.get("content-type", ""))
    return content_type.split(";", 1)[0].strip().lower()


def _content_length(response: httpx.Response) -> int | None:
    raw = response.headers.get("content-length")
    if raw is None:
        return None
    try:
        return int(raw)
    except ValueError:
        return None


def _find_base64_image(payload: Any) -> str | None:
    """``{"image": ...}`` (flux-1-schnell) or ``{"result": {"image": ...}}`` (raw Workers AI)."""
    if not isinstance(payload, dict):
        return None
    image = payload.get("image")
    if isinstance(image, str):
        return image
    result = payload.get("result")
    if isinstance(result, dict) and isinstance(result.get("image"), str):
        return str(result["image"])
    return None


class _Budget:
    """The retry policy of one logical request: attempts, a time budget, waits.

    Tenacity evaluates ``wait`` and ``stop`` in an order that changed between
    versions; both ask :meth:`planned_wait`, which decides once per attempt
    (jitter included), so they always agree.
    """

    def __init__(self, *, budget_s: float, max_attempts: int, clock: Callable[[], float]) -> None:
        self._budget_s = budget_s
        self._max_attempts = max_attempts
        self._clock = clock
        self._started_at = clock()
        self._planned: dict[int, float] = {}

    def planned_wait(self, retry_state: RetryCallState) -> float:
        attempt = retry_state.attempt_number
        if attempt not in self._planned:
            exponent = min(attempt - 1, 16)
            backoff_s = min(BACKOFF_MAX_S, BACKOFF_INITIAL_S * 2**exponent)
            backoff_s = min(BACKOFF_MAX_S, backoff_s + random.uniform(0, BACKOFF_INITIAL_S))
            retry_after_s = _retry_after_of(retry_state)
            self._planned[attempt] = max(backoff_s, retry_after_s or 0.0)
        return self._planned[attempt]

    def left_s(self) -> float:
        """Seconds left in the budget (attempts must end by then)."""
        return self._budget_s - (self._clock() - self._started_at)

    def should_stop(self, retry_state: RetryCallState) -> bool:
        if retry_state.attempt_number >= self._max_attempts:
            return True
        elapsed_s = self._clock() - self._started_at
        # Also covers a Retry-After longer than what is left: give up at once.
        return elapsed_s + self.planned_wait(retry_state) > self._budget_s


def _retry_after_of(retry_state: RetryCallState) -> float | None:
    outcome = retry_state.outcome
    if outcome is None:
        return None
    error = outcome.exception()
    if isinstance(error, TransientWorkerError):
        return error.retry_after_s
    return None


class WorkerClient:
    """Calls image workers of either contract; implements ``ImageGenerator``."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        max_image_bytes: int,
        retry_budget_s: float,
        max_attempts: int,
        attempt_timeout_s: float | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``attempt_timeout_s``: the most one HTTP exchange may take, start to
        last byte (``None``: only the retry budget bounds it)."""
        if max_image_bytes < 1:
            raise ValueError("max_image_bytes must be positive")
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if attempt_timeout_s is not None and attempt_timeout_s <= 0:
            raise ValueError("attempt_timeout_s must be positive")
        self._http = http
        self._max_image_bytes = max_image_bytes
        self._retry_budget_s = retry_budget_s
        self._max_attempts = max_attempts
        self._attempt_timeout_s = attempt_timeout_s
        self._sleep = sleep
        self._clock = clock

    async def generate(self, model: ModelSpec, params: GenerationParams) -> GenerationResult:
        """The generator boundary: never raises for a failure, returns it in the tuple."""
        try:
            image = await self.fetch_image(model, params)
        except GenerationError as exc:
            logger.warning(
                "image generation failed: model=%s host=%s kind=%s",
                model.name,
                _host(model),
                exc.kind,
            )
            return GenerationResult(False, None, exc)
        except Exception as exc:
            logger.exception(
                "unexpected error generating an image: model=%s host=%s",
                model.name,
                _host(model),
            )
            error = GenerationError(f"unexpected: {type(exc).__name__}", model=model.display_name)
            error.__cause__ = exc
            return GenerationResult(False, None, error)
        return GenerationResult(True, image, None)

    async def fetch_image(self, model: ModelSpec, params: GenerationParams) -> GeneratedImage:
        """One logical request: transient failures are retried within the budget.

        Raises a :class:`~sakaibot.errors.PermanentWorkerError` at once for
        anything retrying cannot fix, and :class:`~sakaibot.errors.WorkerGaveUp`
        when transient failures outlast the attempts or the time budget. An
        attempt that outlasts its deadline is a :class:`~sakaibot.errors.WorkerTimeout`.
        """
        budget = _Budget(
            budget_s=self._retry_budget_s, max_attempts=self._max_attempts, clock=self._clock
        )
        # Most requests succeed at once: they pay for no retry machinery.
        try:
            return await self._attempt_by_deadline(model, params, budget)
        except TransientWorkerError as exc:
            first_failure: TransientWorkerError | None = exc

        async def attempt() -> GeneratedImage:
            # Tenacity's first attempt is the one that already failed.
            nonlocal first_failure
            if first_failure is not None:
                failure, first_failure = first_failure, None
                raise failure
            return await self._attempt_by_deadline(model, params, budget)

        def log_retry(retry_state: RetryCallState) -> None:
            error = retry_state.outcome.exception() if retry_state.outcome else None
            logger.info(
                "retrying image request: model=%s host=%s attempt=%d kind=%s wait_s=%.1f",
                model.name,
                _host(model),
                retry_state.attempt_number,
                getattr(error, "kind", "?"),
                budget.planned_wait(retry_state),
            )

        retrying = AsyncRetrying(
            retry=retry_if_exception_type(TransientWorkerError),
            stop=budget.should_stop,
            wait=budget.planned_wait,
            sleep=self._sleep,
            before_sleep=log_retry,
        )
        try:
            image: GeneratedImage = await retrying(attempt)
        except RetryError as exc:
            attempts = exc.last_attempt.attempt_number
            last = exc.last_attempt.exception()
            detail = last.detail if isinstance(last, GenerationError) else repr(last)
            raise WorkerGaveUp(detail, model=model.display_name, attempts=attempts) from last
        return image

    async def _attempt_by_deadline(
        self, model: ModelSpec, params: GenerationParams, budget: _Budget
    ) -> GeneratedImage:
        """One attempt that ends by its deadline, whatever the worker does."""
        limit_s = max(0.0, budget.left_s())
        if self._attempt_timeout_s is not None:
            limit_s = min(limit_s, self._attempt_timeout_s)
        try:
            async with asyncio.timeout(limit_s):
                return await self._attempt(model, params)
        except TimeoutError as exc:
            logger.warning(
                "worker too slow: model=%s host=%s no complete answer within %.1f s",
                model.name,
                _host(model),
                limit_s,
            )
            raise WorkerTimeout(
                f"worker too slow: no complete answer from {_host(model)} within {limit_s:.1f} s",
                model=model.display_name,
            ) from exc

    async def _attempt(self, model: ModelSpec, params: GenerationParams) -> GeneratedImage:
        """One HTTP exchange; the only place httpx exceptions are translated."""
        try:
            method, url, headers, body = self._build_request(model, params)
            async with self._http.stream(method, url, headers=headers, json=body) as response:
                return await self._read_response(model, response)
        except httpx.TimeoutException as exc:
            raise WorkerTimeout(
                f"{type(exc).__name__} talking to {_host(model)}", model=model.display_name
            ) from exc
        except httpx.UnsupportedProtocol as exc:
            raise WorkerBadRequest(
                f"unsupported URL scheme for {model.name}: check the worker URL",
                model=model.display_name,
            ) from exc
        except httpx.InvalidURL as exc:
            raise WorkerBadRequest(
                f"invalid worker URL for {model.name}", model=model.display_name
            ) from exc
        except httpx.RequestError as exc:
            # Connect errors, resets, a truncated body (RemoteProtocolError), a
            # body that fails to decompress: the next attempt may well succeed.
            raise TransientWorkerError(
                f"{type(exc).__name__} talking to {_host(model)}", model=model.display_name
            ) from exc

    def _build_request(
        self, model: ModelSpec, params: GenerationParams
    ) -> tuple[str, httpx.URL | str, dict[str, str], dict[str, Any] | None]:
        """``(method, url, headers, json_body)`` of the model's contract."""
        headers = {"Accept": "image/*, application/json;q=0.9, */*;q=0.1"}
        if model.contract is Contract.GET:
            query: dict[str, str] = {"prompt": params.prompt}
            if params.negative_prompt is not None:
                query["negative_prompt"] = params.negative_prompt
            extras: dict[str, int | None] = {
                "seed": params.seed,
                "steps": params.steps,
                "width": params.width,
                "height": params.height,
            }
            query.update({name: str(value) for name, value in extras.items() if value is not None})
            # httpx replaces a URL's own query with `params=`; merging keeps the
            # operator's (e.g. a worker that takes ?token=...).
            url = httpx.URL(model.url).copy_merge_params(query)
            if model.api_key is not None:  # an operator's GET worker may want a key too
                headers["Authorization"] = f"Bearer {model.api_key.get_secret_value()}"
            return "GET", url, headers, None
        fields: dict[str, str | int | None] = {
            "prompt": params.prompt,
            "negative_prompt": params.negative_prompt,
            "width": params.width,
            "height": params.height,
            "num_steps": params.steps,
            "seed": params.seed,
        }
        body: dict[str, Any] = {name: value for name, value in fields.items() if value is not None}
        if model.api_key is not None:
            headers["Authorization"] = f"Bearer {model.api_key.get_secret_value()}"
        return "POST", model.url, headers, body

    async def _read_response(self, model: ModelSpec, response: httpx.Response) -> GeneratedImage:
        status = response.status_code
        if status != 200:
            body = await _read_some(response, _ERROR_BODY_MAX_BYTES)
            self._raise_for_status(model, response, body)
        media_type = _media_type(response)
        if media_type == "application/json" or media_type.endswith("+json"):
            return await self._read_json_image(model, response)
        if media_type.startswith("text/") or media_type in {"application/xml", "application/xhtml"}:
            body = await _read_some(response, _ERROR_BODY_MAX_BYTES)
            raise InvalidImage(
                f"HTTP 200 {media_type} instead of an image: "
                f"{_shorten(_redact(_describe_body(body), model))!r}",
                model=model.display_name,
            )
        # image/*, and also octet-stream or no type at all: some user workers
        # forget the header. The magic bytes decide either way.
        data = await self._read_capped(model, response, self._max_image_bytes)
        return self._to_image(model, data, origin=media_type or "no content type")

    async def _read_json_image(self, model: ModelSpec, response: httpx.Response) -> GeneratedImage:
        # Base64 is 4/3 of the image, plus a little JSON around it.
        json_cap = self._max_image_bytes * 4 // 3 + 64 * 1024
        body = await self._read_capped(model, response, json_cap, decoded_ratio=0.75)
        try:
            payload = json.loads(body)
        except RecursionError as exc:
            raise InvalidImage(
                "HTTP 200 JSON nested too deeply to read", model=model.display_name
            ) from exc
        except ValueError as exc:
            raise InvalidImage(
                "HTTP 200 JSON that does not parse: "
                f"{_shorten(_redact(_safe_text(body), model))!r}",
                model=model.display_name,
            ) from exc
        encoded = _find_base64_image(payload)
        if encoded is None:
            described = _shorten(_redact(_describe_body(body), model))
            if _FILTERED.search(described):
                raise ContentFiltered(f"HTTP 200: {described}", model=model.display_name)
            raise InvalidImage(
                f"HTTP 200 JSON without an image: {described!r}", model=model.display_name
            )
        compact = _WHITESPACE.sub("", _DATA_URL.sub("", encoded.strip(), count=1))
        # Refuse before decoding: 4 base64 characters carry 3 bytes.
        estimated_bytes = len(compact) * 3 // 4
        if estimated_bytes > self._max_image_bytes + 2:
            raise ImageTooLarge(estimated_bytes, self._max_image_bytes, model=model.display_name)
        try:
            data = base64.b64decode(compact.encode("ascii"), validate=True)
        except (binascii.Error, UnicodeEncodeError) as exc:
            raise InvalidImage(
                "HTTP 200 JSON whose image is not valid base64", model=model.display_name
            ) from exc
        if len(data) > self._max_image_bytes:
            raise ImageTooLarge(len(data), self._max_image_bytes, model=model.display_name)
        return self._to_image(model, data, origin="base64 in JSON")

    def _to_image(self, model: ModelSpec, data: bytes, *, origin: str) -> GeneratedImage:
        try:
            mime_type, extension, width, height = inspect_image(data)
        except InvalidImage as exc:
            snippet = _shorten(_redact(_safe_text(data[:DETAIL_MAX_CHARS]), model))
            raise InvalidImage(
                f"HTTP 200 ({origin}) but {exc.detail}; body starts {snippet!r}",
                model=model.display_name,
            ) from exc
        return GeneratedImage(
            data=data, mime_type=mime_type, extension=extension, width=width, height=height
        )

    async def _read_capped(
        self,
        model: ModelSpec,
        response: httpx.Response,
        limit_bytes: int,
        *,
        decoded_ratio: float = 1.0,
    ) -> bytes:
        """The whole body, refusing it as soon as it passes ``limit_bytes``.

        ``decoded_ratio`` turns the body size into the image size reported
        (3/4 for base64 in JSON).
        """
        declared = _content_length(response)
        if declared is not None and declared > limit_bytes:
            raise ImageTooLarge(
                int(declared * decoded_ratio), self._max_image_bytes, model=model.display_name
            )
        buffer = bytearray()
        async for chunk in response.aiter_bytes():
            buffer += chunk
            if len(buffer) > limit_bytes:
                # Stop here: the rest of the body is never downloaded.
                raise ImageTooLarge(
                    int(len(buffer) * decoded_ratio),
                    self._max_image_bytes,
                    model=model.display_name,
                )
        return bytes(buffer)

    def _raise_for_status(
        self, model: ModelSpec, response: httpx.Response, body: bytes
    ) -> NoReturn:
        status = response.status_code
        described = _shorten(_redact(_describe_body(body), model))
        detail = f"HTTP {status}: {described}" if described else f"HTTP {status}"
        logger.warning(
            "worker answered an error: model=%s host=%s status=%d", model.name, _host(model), status
        )
        name = model.display_name
        if status in (401, 403):
            raise WorkerAuthError(detail, model=name)
        if status == 429:
            if _QUOTA.search(described):
                raise QuotaExhausted(detail, model=name)
            # 3040 "out of capacity" and plain rate limits: wait and retry.
            raise _transient(detail, name, response)
        if status in _TRANSIENT_STATUSES:
            raise _transient(detail, name, response)
        if 300 <= status < 400:
            raise WorkerBadRequest(
                f"HTTP {status} redirect: check the worker URL (redirects are not followed)",
                model=name,
            )
        if _FILTERED.search(described) and (400 <= status < 500 or status == 500):
            raise ContentFiltered(detail, model=name)
        if 400 <= status < 500:
            # 400/405/413/422 (the documented ones), and any other 4xx: a 404 is
            # a wrong URL path, and none of them gets better by retrying.
            raise WorkerBadRequest(detail, model=name)
        if status == 500:
            if _QUOTA.search(described):
                # 3036 wrapped in a 500 by the worker: still "until the next UTC day".
                raise QuotaExhausted(detail, model=name)
            # Capacity (3040) and timeouts (3007/3008) are transient by definition,
            # and so, by decision, is a plain 500 "Failed to generate image": it is
            # what the common worker answers for any Workers AI internal error, and
            # those usually clear on the next try. A 500 that is really permanent
            # costs a few bounded retries, then WorkerGaveUp.
            raise _transient(detail, name, response)
        if status in (501, 505):
            raise WorkerBadRequest(detail, model=name)
        if 500 <= status < 600:
            # Other 5xx, e.g. Cloudflare's 520-527 "origin unreachable/timed out".
            raise _transient(detail, name, response)
        # 1xx/2xx other than 200 (e.g. 204 No Content): no image came back.
        raise InvalidImage(f"{detail} instead of an image", model=model.display_name)


async def _read_some(response: httpx.Response, limit_bytes: int) -> bytes:
    """At most ``limit_bytes`` of a body (error bodies are only for the detail)."""
    buffer = bytearray()
    async for chunk in response.aiter_bytes():
        buffer += chunk
        if len(buffer) >= limit_bytes:
            break
    return bytes(buffer[:limit_bytes])


def _safe_text(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")


def _host(model: ModelSpec) -> str:
    try:
        return httpx.URL(model.url).host or "?"
    except httpx.InvalidURL:
        return "?"

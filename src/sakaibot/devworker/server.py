"""The development worker's HTTP server: routes, the two worker contracts, its lifecycle.

:class:`DevWorker` runs a :class:`~http.server.ThreadingHTTPServer` on a
background thread. Each request is handled by :class:`_Handler`, which is given
one :class:`WorkerState` when it is made: the run's configuration and the
thread-safe counters, fault tallies and connection list every handler shares.
The handler holds no reference to the :class:`DevWorker` and reaches into no
private member; what it answers comes from :mod:`.previews`, :mod:`.faults`
and :mod:`.llm`. Why the standard library's server: see the package docstring.
"""

from __future__ import annotations

import contextlib
import functools
import hmac
import json
import logging
import random
import select
import socket
import struct
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit

from sakaibot.devworker.faults import (
    DEFAULT_OVERSIZED_BYTES,
    DEFAULT_TRICKLE_DELAY_MS,
    FAULT_HEADER,
    FAULT_MARKER,
    FAULT_NAMES,
    FAULT_QUERY_PARAMETER,
    LLM_FAULT_HEADER,
    LLM_MARKER,
    FaultRequest,
    FaultSpec,
    parse_fault,
    requested_fault,
    serve_fault,
    strip_markers,
)
from sakaibot.devworker.llm import (
    LLM_FAULT_NAMES,
    answer_chat,
    last_user_text,
    models_list,
    openai_error,
)
from sakaibot.devworker.previews import (
    MIME_TYPES,
    ImageFormat,
    clamp_size,
    fast_previews,
    render_preview,
)

logger = logging.getLogger(__name__)

#: POST bodies above this are refused with 413 (a prompt is at most a few kB).
MAX_BODY_BYTES = 1_000_000
#: How often a hanging handler looks at its client and the stop flag.
_HANG_POLL_S = 0.1
#: How long stop() waits for handler threads to notice and finish.
_STOP_GRACE_S = 2.0

_RETRY_AFTER_STATUSES = frozenset({429, 503})
_INJECTED_FAILURE = {
    "error": "Failed to generate image",
    "details": "development worker: injected failure",
}

_IMAGE_PATHS = frozenset({"/flux", "/sdxl"})
_LLM_CHAT_PATH = "/v1/chat/completions"
_LLM_MODELS_PATH = "/v1/models"
_LLM_PATHS = frozenset({_LLM_CHAT_PATH, _LLM_MODELS_PATH})


@dataclass(frozen=True)
class DevWorkerConfig:
    """How the development worker behaves; the defaults answer at once, always."""

    host: str = "127.0.0.1"
    #: 0 picks any free port; :meth:`DevWorker.start` returns the one chosen.
    port: int = 0
    #: Slept in the handler thread before each image answer (also before failures).
    latency_ms: int = 0
    #: Slept before each answer of the stand-in LLM (``/v1/chat/completions``).
    llm_latency_ms: int = 0
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
    #: (``NAME`` or ``NAME*N`` from :data:`~sakaibot.devworker.faults.FAULT_NAMES`).
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
        if self.llm_latency_ms < 0:
            raise ValueError(f"llm_latency_ms must not be negative, not {self.llm_latency_ms}")
        if not 0.0 <= self.fail_rate <= 1.0:
            raise ValueError(f"fail_rate must be between 0 and 1, not {self.fail_rate}")
        if not 400 <= self.fail_status <= 599:
            raise ValueError(f"fail_status must be an HTTP error status, not {self.fail_status}")


@dataclass(frozen=True)
class ImageRequest:
    """An image request of either contract, checked: what the preview is made from."""

    prompt: str
    seed: int
    width: int
    height: int


class WorkerState:
    """What every request handler shares: the configuration and the worker's tallies.

    One per :class:`DevWorker`, handed to each handler when it is made. Every
    method may be called from any handler thread.
    """

    def __init__(self, config: DevWorkerConfig) -> None:
        self.config = config
        #: Set while the worker stops: hanging and trickling handlers give up.
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        # Signalled whenever a connection is untracked (wait_idle() waits on it).
        self._idle = threading.Condition(self._lock)
        self._rng = random.Random(config.seed)
        self._request_count = 0
        self._served: list[tuple[str, str]] = []
        self._fault_counts: dict[tuple[str, str, str], int] = {}
        self._connections: set[socket.socket] = set()
        self._fast_images = fast_previews() if config.fast else {}

    @property
    def request_count(self) -> int:
        with self._lock:
            return self._request_count

    @property
    def served(self) -> list[tuple[str, str]]:
        with self._lock:
            return list(self._served)

    def count_request(self) -> None:
        with self._lock:
            self._request_count += 1

    def record_served(self, path: str, what: str) -> None:
        with self._lock:
            self._served.append((path, what))

    def fault_applies(self, kind: str, spec: FaultSpec, prompt: str) -> bool:
        """Whether ``spec`` still applies to ``prompt`` (``NAME*N`` counts per prompt)."""
        if spec.limit is None:
            return True
        key = (kind, spec.text, prompt)
        with self._lock:
            used = self._fault_counts.get(key, 0)
            if used >= spec.limit:
                return False
            self._fault_counts[key] = used + 1
            return True

    def roll_failure(self) -> bool:
        """The seeded ``fail_rate`` dice: True when this request fails."""
        if self.config.fail_rate <= 0.0:
            return False
        with self._lock:
            return self._rng.random() < self.config.fail_rate

    def sleep_latency(self, *, llm: bool = False) -> None:
        latency_ms = self.config.llm_latency_ms if llm else self.config.latency_ms
        if latency_ms > 0:
            # An event, not time.sleep, so stop() does not wait for sleeping handlers.
            self.stopping.wait(latency_ms / 1000)

    def image(self, request: ImageRequest, image_format: ImageFormat) -> bytes:
        """The preview ``request`` gets (fast mode: the one pre-rendered image)."""
        if self.config.fast:
            return self._fast_images[image_format]
        return render_preview(
            strip_markers(request.prompt),
            seed=request.seed,
            width=request.width,
            height=request.height,
            image_format=image_format,
        )

    def track(self, connection: socket.socket) -> None:
        with self._lock:
            self._connections.add(connection)
        if self.stopping.is_set():
            # Accepted while stop() was running: do not let it sit idle.
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    def untrack(self, connection: socket.socket) -> None:
        with self._idle:
            self._connections.discard(connection)
            self._idle.notify_all()

    def shut_connections(self) -> None:
        """Shut every open connection, which wakes handlers blocked on an idle one."""
        with self._lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    def wait_idle(self, timeout_s: float) -> bool:
        """Wait until no connection is open; False if some still are after ``timeout_s``."""
        with self._idle:
            return self._idle.wait_for(lambda: not self._connections, timeout=timeout_s)


class _RefusedError(Exception):
    """A request the worker refuses; carries the status and the JSON error text."""

    def __init__(self, status: int, error: str, details: str | None = None) -> None:
        super().__init__(error)
        self.status = status
        self.error = error
        self.details = details


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


def _image_request(fields: Mapping[str, object]) -> ImageRequest:
    prompt = fields.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise _RefusedError(400, "Prompt is required")
    negative = fields.get("negative_prompt")
    if negative is not None and not isinstance(negative, str):
        raise _RefusedError(400, "negative_prompt must be a string")
    for name in ("steps", "num_steps"):
        _parse_int(name, fields.get(name))
    seed = _parse_int("seed", fields.get("seed"))
    return ImageRequest(
        prompt=prompt,
        # No seed means seed 0, so the development worker stays deterministic.
        seed=0 if seed is None else seed,
        width=clamp_size(_parse_int("width", fields.get("width"))),
        height=clamp_size(_parse_int("height", fields.get("height"))),
    )


def _query(raw: str) -> dict[str, str]:
    return {key: values[0] for key, values in parse_qs(raw).items()}


def _json_object(body: bytes) -> dict[str, object]:
    try:
        parsed = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise _RefusedError(400, "Invalid JSON body") from None
    if not isinstance(parsed, dict):
        raise _RefusedError(400, "Invalid JSON body")
    return parsed


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        # The stdlib prints a traceback to stderr; a client that went away is normal.
        logger.debug("development worker: error while serving %s", client_address, exc_info=True)


class _Server6(_Server):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    """One connection's requests; also the :class:`~.faults.Reply` faults answer on."""

    protocol_version = "HTTP/1.1"
    server_version = "SakaiBotDevWorker/1"
    # An idle keep-alive connection is dropped after this long.
    timeout = 30

    def __init__(self, *args: Any, state: WorkerState) -> None:
        # Set first: the base class handles the whole connection inside __init__.
        self.state = state
        super().__init__(*args)

    def setup(self) -> None:
        super().setup()
        # Headers and body are separate writes: without this, Nagle's algorithm and
        # delayed ACKs add ~40 ms to every keep-alive answer.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.state.track(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.state.untrack(self.connection)

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
        state = self.state
        split = urlsplit(self.path)
        path = split.path.rstrip("/") or "/"
        try:
            # Read the body first, so a keep-alive connection stays in step.
            body = self._read_body()
            if path == "/health":
                if method != "GET":
                    raise _RefusedError(405, "Not allowed")
                self.send_json(200, {"ok": True, "requests": state.request_count})
                return
            if path == "/flux":
                state.count_request()
                if method != "GET":
                    raise _RefusedError(405, "Not allowed")
                query = _query(split.query)
                self._answer_image(path, _image_request(query), "JPEG", query)
                return
            if path == "/sdxl":
                state.count_request()
                if method != "POST":
                    raise _RefusedError(405, "Not allowed")
                self._check_bearer()
                request = _image_request(_json_object(body))
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
                state.record_served(path, "ok")
                self.send_json(200, models_list())
                return
            raise _RefusedError(404, "Not found")
        except _RefusedError as exc:
            if path in _IMAGE_PATHS or path in _LLM_PATHS:
                state.record_served(path, f"refused:{exc.status}")
            if path in _LLM_PATHS:
                self.send_json(exc.status, openai_error(exc.error, exc.details))
                return
            payload = {"error": exc.error}
            if exc.details is not None:
                payload["details"] = exc.details
            self.send_json(exc.status, payload)

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
        expected = self.state.config.api_key
        if expected is None:
            return
        scheme, _, token = (self.headers.get("Authorization") or "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            token.strip().encode("utf-8", "replace"), expected.encode("utf-8")
        ):
            raise _RefusedError(401, "Unauthorized")

    def _select_fault(self, prompt: str, *, query: Mapping[str, str], llm: bool) -> str:
        """The fault this request gets (``"ok"`` for none); 400 for an unknown one.

        Header, then query parameter (image requests), then prompt marker, then
        the run's fault (image requests); ``NAME*N`` is counted per prompt.
        """
        if llm:
            known = LLM_FAULT_NAMES
            explicit = [self.headers.get(LLM_FAULT_HEADER), self.headers.get(FAULT_HEADER)]
            raw = requested_fault(explicit, prompt, LLM_MARKER, "ok")
        else:
            known = FAULT_NAMES
            explicit = [self.headers.get(FAULT_HEADER), query.get(FAULT_QUERY_PARAMETER)]
            raw = requested_fault(explicit, prompt, FAULT_MARKER, self.state.config.fault)
        try:
            spec = parse_fault(raw, known)
        except ValueError:
            raise _RefusedError(
                400, f"unknown fault {raw.strip()}", f"known: {', '.join(known)}"
            ) from None
        if spec.name == "ok":
            return "ok"
        kind = "llm" if llm else "image"
        return spec.name if self.state.fault_applies(kind, spec, prompt) else "ok"

    def _answer_image(
        self,
        path: str,
        request: ImageRequest,
        image_format: ImageFormat,
        query: Mapping[str, str],
    ) -> None:
        state = self.state
        fault = self._select_fault(request.prompt, query=query, llm=False)
        state.sleep_latency()
        if fault == "ok" and state.roll_failure():
            status = state.config.fail_status
            state.record_served(path, f"fail-rate:{status}")
            headers = {"Retry-After": "1"} if status in _RETRY_AFTER_STATUSES else {}
            self.send_json(status, _INJECTED_FAILURE, headers)
            return
        state.record_served(path, fault)
        if fault == "ok":
            self.send(200, MIME_TYPES[image_format], state.image(request, image_format))
            return
        logger.info("development worker: %s %s -> fault %s", self.command, path, fault)
        answered = FaultRequest(
            render=functools.partial(state.image, request),
            image_format=image_format,
            oversized_bytes=state.config.oversized_bytes,
            trickle_delay_ms=state.config.trickle_delay_ms,
        )
        serve_fault(fault, self, answered)

    def _answer_chat(self, path: str, body: bytes) -> None:
        payload = _json_object(body)
        model = payload.get("model")
        messages = payload.get("messages")
        if not isinstance(model, str) or not model.strip():
            raise _RefusedError(400, "model is required")
        if not isinstance(messages, list) or not messages:
            raise _RefusedError(400, "messages is required")
        prompt = last_user_text(messages)
        self.state.sleep_latency(llm=True)
        fault = self._select_fault(prompt, query={}, llm=True)
        self.state.record_served(path, fault)
        if fault != "ok":
            logger.info("development worker: %s %s -> LLM fault %s", self.command, path, fault)
        answer_chat(fault, self, model, prompt)

    # -- the Reply faults answer on

    def send(
        self,
        status: int,
        content_type: str,
        body: bytes,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.send_head(status, content_type, len(body), headers)
        self.wfile.write(body)

    def send_json(
        self, status: int, payload: object, headers: Mapping[str, str] | None = None
    ) -> None:
        self.send(status, "application/json", json.dumps(payload).encode("utf-8"), headers)

    def send_head(
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

    def write(self, data: bytes) -> None:
        self.wfile.write(data)

    def close_after(self) -> None:
        self.close_connection = True

    def stopping(self) -> bool:
        return self.state.stopping.is_set()

    def pause(self, seconds: float) -> bool:
        stopping = self.state.stopping
        deadline = time.monotonic() + seconds
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            if stopping.wait(min(remaining, _HANG_POLL_S)):
                return True
            if self._client_gone():
                return True

    def reset(self) -> None:
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        # The descriptor is released (with the reset) once the handler's reader
        # is closed in finish(); later shutdown/close calls are then no-ops.
        self.connection.close()

    def _client_gone(self) -> bool:
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            if not readable:
                return False
            # Readable with nothing to read: the client closed its end.
            return bool(self.connection.recv(1, socket.MSG_PEEK) == b"")
        except (OSError, ValueError):
            return True


class DevWorker:
    """The development worker: :meth:`start` it, use its URL, :meth:`stop` it.

    ``with DevWorker(config) as url: ...`` starts and stops it too.
    """

    def __init__(self, config: DevWorkerConfig | None = None) -> None:
        self.config = config or DevWorkerConfig()
        self._state = WorkerState(self.config)
        self._lifecycle = threading.Lock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._url: str | None = None

    # -- lifecycle

    def start(self) -> str:
        """Start serving in a background thread; returns ``http://HOST:PORT``."""
        with self._lifecycle:
            return self._start_locked()

    def _start_locked(self) -> str:
        if self._server is not None:
            raise RuntimeError("the development worker is already running")
        self._state.stopping.clear()
        server_class = _Server6 if ":" in self.config.host else _Server
        handler = functools.partial(_Handler, state=self._state)
        server = server_class((self.config.host, self.config.port), handler)
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
        self._state.stopping.set()
        server.shutdown()
        server.server_close()
        self._state.shut_connections()
        if thread is not None:
            thread.join()
        if not self._state.wait_idle(_STOP_GRACE_S):
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
            self._state.stopping.wait()
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
        return self._state.request_count

    @property
    def served(self) -> list[tuple[str, str]]:
        """``(path, what)`` per image and LLM request so far, oldest first (a copy).

        ``what`` is the fault served (``"503"``, ``"timeout"``, ...) or ``"ok"``;
        ``"fail-rate:STATUS"`` for a ``fail_rate`` failure and ``"refused:STATUS"``
        for a request refused before any fault applied (401, 400, 405, ...).
        Recorded before the answer is sent, so a hanging request is already there.
        """
        return self._state.served

    def wait_idle(self, timeout_s: float) -> bool:
        """Wait until no client connection is open; False if some still are after ``timeout_s``.

        A handler that hangs (the ``timeout`` fault) closes its connection once it
        notices the client left, so this is how a test sees that it did.
        """
        return self._state.wait_idle(timeout_s)


def _host_for_url(host: str) -> str:
    return f"[{host}]" if ":" in host else host

"""A real OpenAI-compatible chat server on loopback, for testing the prompt enhancer.

The OpenAI SDK is exercised end to end (its HTTP client, serialisation and
error mapping) instead of being patched. Each ``POST .../chat/completions``
takes the next behaviour from a queue and is recorded::

    with LlmStub() as stub:
        stub.enqueue(Status(500), Completion("A fox in the snow ..."))
        provider = LlmProvider("OpenRouter", stub.base_url, SecretStr("k"), "m")
        ...
        assert stub.requests[0].json["model"] == "m"

When the queue is empty the stub answers 500 with a message saying so, so a
test that forgot a behaviour fails loudly.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any


@dataclass(frozen=True)
class Completion:
    """200 with a chat completion whose message content is ``text`` (``None``: null)."""

    text: str | None


@dataclass(frozen=True)
class Status:
    """An OpenAI-style error answer with this HTTP status (401, 429, 500, ...)."""

    status: int
    message: str = "stub error"


@dataclass(frozen=True)
class Hang:
    """Never answer (until the stub stops): for client timeouts."""


@dataclass(frozen=True)
class Garbage:
    """200 with a body that is not a chat completion."""

    body: bytes = b"<html>definitely not json</html>"
    content_type: str = "application/json"


@dataclass(frozen=True)
class NoChoices:
    """200 with a well-formed completion that has no choices."""


@dataclass(frozen=True)
class Huge:
    """200 with a completion whose content is ``size_bytes`` long, streamed in
    pieces (no Content-Length unless ``declare_length``) until the client stops."""

    size_bytes: int
    declare_length: bool = False


Behaviour = Completion | Status | Hang | Garbage | NoChoices | Huge

_HUGE_PIECE = b"fox " * 16384  # 64 KiB


@dataclass(frozen=True)
class RecordedRequest:
    """One request the stub received."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    json: Any = field(default=None)

    @property
    def authorization(self) -> str | None:
        return self.headers.get("authorization")

    @property
    def messages(self) -> list[dict[str, Any]]:
        if not isinstance(self.json, dict):
            return []
        messages = self.json.get("messages", [])
        return messages if isinstance(messages, list) else []


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    stub: LlmStub

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that gave up (timeout test) is expected; keep stderr quiet.
        pass


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.0"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        stub = self.server.stub
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        try:
            parsed: Any = json.loads(body)
        except ValueError:
            parsed = None
        stub._record(
            RecordedRequest(
                method="POST",
                path=self.path,
                headers={name.lower(): value for name, value in self.headers.items()},
                body=body,
                json=parsed,
            )
        )
        if not self.path.rstrip("/").endswith("/chat/completions"):
            self._send_json(404, {"error": {"message": f"no route {self.path}"}})
            return
        behaviour = stub._next_behaviour()
        model = parsed.get("model", "stub-model") if isinstance(parsed, dict) else "stub-model"
        with contextlib.suppress(OSError):  # the client may have given up already
            self._behave(behaviour, str(model))

    def _behave(self, behaviour: Behaviour, model: str) -> None:
        if isinstance(behaviour, Completion):
            self._send_json(200, _completion(behaviour.text, model))
        elif isinstance(behaviour, Status):
            error = {"message": behaviour.message, "type": "stub_error", "code": behaviour.status}
            self._send_json(behaviour.status, {"error": error})
        elif isinstance(behaviour, Hang):
            self.server.stub._released.wait()
            self._send_json(504, {"error": {"message": "stub stopped while hanging"}})
        elif isinstance(behaviour, Garbage):
            self._send(200, behaviour.content_type, behaviour.body)
        elif isinstance(behaviour, Huge):
            self._send_huge(behaviour, model)
        else:
            payload = _completion("unused", model)
            payload["choices"] = []
            self._send_json(200, payload)

    def _send_huge(self, behaviour: Huge, model: str) -> None:
        head, tail = json.dumps(_completion("\x00", model)).encode("utf-8").split(b"\\u0000")
        pieces, rest = divmod(behaviour.size_bytes, len(_HUGE_PIECE))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        if behaviour.declare_length:
            length = len(head) + behaviour.size_bytes + len(tail)
            self.send_header("Content-Length", str(length))
        self.end_headers()
        self.wfile.write(head)
        for _ in range(pieces):
            self.wfile.write(_HUGE_PIECE)
        self.wfile.write(_HUGE_PIECE[:rest] + tail)

    def _send_json(self, status: int, payload: Any) -> None:
        self._send(status, "application/json", json.dumps(payload).encode("utf-8"))

    def _send(self, status: int, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def _completion(text: str | None, model: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-stub",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": "stop",
                "logprobs": None,
            }
        ],
        "usage": {"prompt_tokens": 10, "completion_tokens": 10, "total_tokens": 20},
    }


class LlmStub:
    """An OpenAI-compatible chat server on 127.0.0.1 with a queue of behaviours."""

    def __init__(self, *behaviours: Behaviour) -> None:
        self._lock = threading.Lock()
        self._queue: deque[Behaviour] = deque(behaviours)
        self._requests: list[RecordedRequest] = []
        self._released = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._base_url: str | None = None

    def start(self) -> str:
        """Start serving; returns the base URL (``http://127.0.0.1:PORT/v1``)."""
        server = _Server(("127.0.0.1", 0), _Handler)
        server.stub = self
        self._server = server
        self._base_url = f"http://127.0.0.1:{server.server_address[1]}/v1"
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self._base_url

    def stop(self) -> None:
        """Release hanging requests, stop serving and wait for the server thread."""
        self._released.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def __enter__(self) -> LlmStub:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        if self._base_url is None:
            raise RuntimeError("the stub has not been started")
        return self._base_url

    def enqueue(self, *behaviours: Behaviour) -> None:
        """Answer the next requests with these behaviours, in order."""
        with self._lock:
            self._queue.extend(behaviours)

    @property
    def requests(self) -> list[RecordedRequest]:
        """A copy of the requests received so far, oldest first."""
        with self._lock:
            return list(self._requests)

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self._requests.append(request)

    def _next_behaviour(self) -> Behaviour:
        with self._lock:
            if self._queue:
                return self._queue.popleft()
        return Status(500, "llm stub: no behaviour queued for this request")

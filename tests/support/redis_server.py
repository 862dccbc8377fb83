"""A throwaway ``redis-server`` for tests: a free local port, no persistence, its own folder.

Use it as a context manager (``with RedisServer(tmp) as server: ... server.url``),
typically from a module-scoped fixture; :meth:`RedisServer.stop`,
:meth:`RedisServer.start` and :meth:`RedisServer.restart` simulate Redis going
away and coming back empty. :func:`redis_server_executable` skips the test when
``redis-server`` is not installed, saying how to install it.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

import pytest

SKIP_MESSAGE = (
    "redis-server is not installed: `apt-get install redis-server` (CI installs it) "
    "to run the Redis tests"
)
#: How long a start may take before the test fails (a cold CI machine is slow).
START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 10.0


def redis_server_executable() -> str:
    """The path of ``redis-server``; skips the calling test when there is none."""
    path = shutil.which("redis-server")
    if path is None:
        pytest.skip(SKIP_MESSAGE)
    return path


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _answers_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0) as conn:
            conn.sendall(b"PING\r\n")
            return conn.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """One ``redis-server`` subprocess bound to 127.0.0.1 on a port kept across restarts."""

    def __init__(self, directory: Path, *, executable: str | None = None) -> None:
        self._executable = executable or redis_server_executable()
        self._directory = directory
        self._directory.mkdir(parents=True, exist_ok=True)
        self._log = directory / "redis.log"
        self.port = _free_port()
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        """Start the server and return once it answers PING (bounded by START_TIMEOUT_S)."""
        if self.running:
            return
        command = [
            self._executable,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self._directory),
            "--logfile",
            str(self._log),
            "--daemonize",
            "no",
        ]
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL)
        self._process = process
        deadline = time.monotonic() + START_TIMEOUT_S
        while not _answers_ping(self.port):
            try:
                # Waiting on the process is the pause between attempts, and it
                # notices at once a server that exited (port taken, bad flag).
                process.wait(timeout=0.01)
            except subprocess.TimeoutExpired:
                if time.monotonic() < deadline:
                    continue
                self.stop()
                raise RuntimeError(
                    f"redis-server on port {self.port} did not answer PING within "
                    f"{START_TIMEOUT_S:g} s:\n{self._log_tail()}"
                ) from None
            self._process = None
            raise RuntimeError(
                f"redis-server on port {self.port} exited with code {process.returncode}:\n"
                f"{self._log_tail()}"
            )

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL if it lingers) and wait for it."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def restart(self) -> None:
        """Stop and start again on the same port; nothing is persisted, so it comes back empty."""
        self.stop()
        self.start()

    def _log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self._log.read_text("utf-8", "replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

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
from pathlib import Path

import pytest

from tests.support.server_process import ServerProcess

SKIP_MESSAGE = (
    "redis-server is not installed: `apt-get install redis-server` (CI installs it) "
    "to run the Redis tests"
)


def redis_server_executable() -> str:
    """The path of ``redis-server``; skips the calling test when there is none."""
    path = shutil.which("redis-server")
    if path is None:
        pytest.skip(SKIP_MESSAGE)
    return path


def _answers_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0) as conn:
            conn.sendall(b"PING\r\n")
            return conn.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer(ServerProcess):
    """One ``redis-server`` subprocess bound to 127.0.0.1 on a port kept across restarts."""

    name = "redis-server"
    poll_s = 0.01

    def __init__(self, directory: Path, *, executable: str | None = None) -> None:
        self._executable = executable or redis_server_executable()
        super().__init__(directory, "redis.log")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def answers(self) -> bool:
        return _answers_ping(self.port)

    def start(self) -> None:
        """Start the server and return once it answers PING (bounded by ``start_timeout_s``)."""
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
        self._launch(command, log_output=False)

    def restart(self) -> None:
        """Stop and start again on the same port; nothing is persisted, so it comes back empty."""
        self.stop()
        self.start()

"""One server subprocess for tests: a free loopback port, a log file, a bounded start and stop.

:class:`ServerProcess` holds what every test server shares (``redis-server``,
workerd): it launches the command, waits until the subclass's :meth:`answers`
says the server is ready (bounded in seconds, noticing at once a process that
exited), stops it with SIGTERM and then SIGKILL, and shows the end of its log
when something goes wrong.
"""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import Self

STOP_TIMEOUT_S = 10.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class ServerProcess:
    """A server subprocess on 127.0.0.1:``port``; subclasses say how to start and ask it."""

    #: How the server is named in errors ("redis-server", "workerd").
    name = "server"
    #: How long a start may take before the test fails (a cold CI machine is slow).
    start_timeout_s = 10.0
    #: The pause between two readiness checks (a wait on the process, so an exit shows at once).
    poll_s = 0.05

    def __init__(self, directory: Path, log_name: str) -> None:
        self._directory = directory
        self._directory.mkdir(parents=True, exist_ok=True)
        self._log = directory / log_name
        self.port = free_port()
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def answers(self) -> bool:
        """Whether the server is ready to serve (one quick, bounded check)."""
        raise NotImplementedError

    def _launch(self, command: list[str], *, log_output: bool, cwd: Path | None = None) -> None:
        """Start ``command`` and return once :meth:`answers` (bounded by ``start_timeout_s``)."""
        with self._log.open("ab") as log:
            process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log if log_output else None,
                stderr=subprocess.STDOUT if log_output else None,
                cwd=cwd,
            )
        self._process = process
        deadline = time.monotonic() + self.start_timeout_s
        while not self.answers():
            try:
                process.wait(timeout=self.poll_s)
            except subprocess.TimeoutExpired:
                if time.monotonic() < deadline:
                    continue
                self.stop()
                raise RuntimeError(
                    f"{self.name} on port {self.port} did not answer within "
                    f"{self.start_timeout_s:g} s:\n{self.log_tail()}"
                ) from None
            self._process = None
            raise RuntimeError(
                f"{self.name} on port {self.port} exited with code {process.returncode}:\n"
                f"{self.log_tail()}"
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

    def log_tail(self, lines: int = 30) -> str:
        """The end of the server's log."""
        try:
            return "\n".join(self._log.read_text("utf-8", "replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def __enter__(self) -> Self:
        self.start()
        return self

    def start(self) -> None:
        raise NotImplementedError

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

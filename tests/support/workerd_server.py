"""The shipped ``cloudflare/`` worker running in workerd, Cloudflare's own runtime, for tests.

:class:`WorkerdServer` writes a workerd config into a test folder that embeds
the scripts of ``cloudflare/`` unchanged (the modules next to ``main`` in
``cloudflare/wrangler.toml``, with its compatibility date), binds the Workers
AI binding to ``tests/support/workerd/fake_ai.js`` and ``API_TOKEN`` to a test
token, and serves it on 127.0.0.1 at a free port. :func:`workerd_executable`
finds the workerd that ``make workerd`` installs; without one the test skips
and says how to get it, except under ``CI=true``, where it fails instead so CI
never passes without running these tests.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import tomllib
from pathlib import Path
from types import TracebackType

import httpx
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
CLOUDFLARE_DIR = REPO_ROOT / "cloudflare"
FAKE_AI_MODULE = Path(__file__).resolve().parent / "workerd" / "fake_ai.js"
#: Where ``make workerd`` puts it (a git-ignored folder).
INSTALLED_WORKERD = REPO_ROOT / ".tools" / "workerd" / "node_modules" / ".bin" / "workerd"
MISSING_MESSAGE = (
    "workerd is not installed: run `make workerd` (needs Node.js, npm and the npm registry) "
    "to run the Cloudflare worker tests"
)
#: A cold start compiles the scripts; a loaded CI machine is slow.
START_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 10.0


def workerd_executable() -> Path:
    """The workerd binary; skips the calling test when there is none (fails under CI)."""
    if INSTALLED_WORKERD.exists():
        return INSTALLED_WORKERD
    found = shutil.which("workerd")
    if found is not None:
        return Path(found)
    if os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}:
        pytest.fail(f"CI must run the Cloudflare worker tests, but {MISSING_MESSAGE}")
    pytest.skip(MISSING_MESSAGE)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _capnp_text(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


class WorkerdServer:
    """One ``workerd serve`` subprocess running the shipped worker with a fake ``AI``."""

    def __init__(
        self,
        directory: Path,
        *,
        token: str,
        jpeg: bytes,
        png: bytes,
        executable: Path | None = None,
    ) -> None:
        self._executable = executable or workerd_executable()
        self._directory = directory
        self._directory.mkdir(parents=True, exist_ok=True)
        self._log = directory / "workerd.log"
        self._token = token
        (directory / "fake.jpg").write_bytes(jpeg)
        (directory / "fake.png").write_bytes(png)
        self.port = _free_port()
        self._process: subprocess.Popen[bytes] | None = None
        self._config = directory / "config.capnp"
        self._config.write_text(self._render_config(), "utf-8")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _embed(self, path: Path) -> str:
        # Cap'n Proto resolves `embed` relative to the config file only.
        return f"embed {_capnp_text(os.path.relpath(path, self._directory))}"

    def _render_config(self) -> str:
        wrangler = tomllib.loads((CLOUDFLARE_DIR / "wrangler.toml").read_text("utf-8"))
        main = (CLOUDFLARE_DIR / wrangler["main"]).resolve()
        source_dir = main.parent
        # The entry module first: workerd treats the first module as the Worker.
        scripts = [main, *sorted(p for p in source_dir.rglob("*.js") if p != main)]
        modules = ",\n    ".join(
            f"(name = {_capnp_text(p.relative_to(source_dir).as_posix())}, "
            f"esModule = {self._embed(p)})"
            for p in scripts
        )
        flags = ", ".join(_capnp_text(flag) for flag in wrangler.get("compatibility_flags", []))
        ai_binding = wrangler["ai"]["binding"]
        token = _capnp_text(self._token)
        return f"""using Workerd = import "/workerd/workerd.capnp";

const config :Workerd.Config = (
  services = [(name = "images", worker = .images)],
  sockets = [(name = "http", address = "127.0.0.1:{self.port}", http = (), service = "images")],
  extensions = [(modules = [
    (name = "sakaibot-test:fake-ai", internal = true, esModule = {self._embed(FAKE_AI_MODULE)}),
  ])],
);

const images :Workerd.Worker = (
  modules = [
    {modules}
  ],
  compatibilityDate = {_capnp_text(wrangler["compatibility_date"])},
  compatibilityFlags = [{flags}],
  bindings = [
    (name = "API_TOKEN", text = {token}),
    (name = {_capnp_text(ai_binding)}, wrapped = (
      moduleName = "sakaibot-test:fake-ai",
      innerBindings = [
        (name = "JPEG", data = embed "fake.jpg"),
        (name = "PNG", data = embed "fake.png"),
        (name = "SECRET", text = {token}),
      ],
    )),
  ],
);
"""

    def start(self) -> None:
        """Start workerd and return once it answers HTTP (bounded by START_TIMEOUT_S)."""
        with self._log.open("wb") as log:
            process = subprocess.Popen(
                [str(self._executable), "serve", str(self._config)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self._directory,
            )
        self._process = process
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self._answers():
            try:
                # Waiting on the process is the pause between attempts, and it
                # notices at once a workerd that exited (a bad config, port taken).
                process.wait(timeout=0.05)
            except subprocess.TimeoutExpired:
                if time.monotonic() < deadline:
                    continue
                self.stop()
                raise RuntimeError(
                    f"workerd on port {self.port} did not answer within "
                    f"{START_TIMEOUT_S:g} s:\n{self.log_tail()}"
                ) from None
            self._process = None
            raise RuntimeError(f"workerd exited with code {process.returncode}:\n{self.log_tail()}")

    def _answers(self) -> bool:
        try:
            # Any HTTP answer means the worker is loaded; "/" is a 404 of the worker's own.
            httpx.get(f"{self.url}/", timeout=1.0)
        except httpx.HTTPError:
            return False
        return True

    def stop(self) -> None:
        """Stop workerd (SIGTERM, then SIGKILL if it lingers) and wait for it."""
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
        """The end of workerd's output (the worker's console.error lines land here)."""
        try:
            return "\n".join(self._log.read_text("utf-8", "replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def __enter__(self) -> WorkerdServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

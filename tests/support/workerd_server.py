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
import tomllib
from pathlib import Path

import httpx
import pytest

from tests.support.server_process import ServerProcess

REPO_ROOT = Path(__file__).resolve().parents[2]
CLOUDFLARE_DIR = REPO_ROOT / "cloudflare"
FAKE_AI_MODULE = Path(__file__).resolve().parent / "workerd" / "fake_ai.js"
#: Where ``make workerd`` puts it (a git-ignored folder).
INSTALLED_WORKERD = REPO_ROOT / ".tools" / "workerd" / "node_modules" / ".bin" / "workerd"
MISSING_MESSAGE = (
    "workerd is not installed: run `make workerd` (needs Node.js, npm and the npm registry) "
    "to run the Cloudflare worker tests"
)


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


def _capnp_text(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


class WorkerdServer(ServerProcess):
    """One ``workerd serve`` subprocess running the shipped worker with a fake ``AI``."""

    name = "workerd"
    #: A cold start compiles the scripts; a loaded CI machine is slow.
    start_timeout_s = 20.0

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
        super().__init__(directory, "workerd.log")
        self._token = token
        (directory / "fake.jpg").write_bytes(jpeg)
        (directory / "fake.png").write_bytes(png)
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
        """Start workerd and return once it answers HTTP (bounded by ``start_timeout_s``)."""
        command = [str(self._executable), "serve", str(self._config)]
        self._launch(command, log_output=True, cwd=self._directory)

    def answers(self) -> bool:
        try:
            # Any HTTP answer means the worker is loaded; "/" is a 404 of the worker's own.
            httpx.get(f"{self.url}/", timeout=1.0)
        except httpx.HTTPError:
            return False
        return True

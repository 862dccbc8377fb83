"""The core knows nothing of Telegram, the OpenAI SDK, httpx, SQLite, Redis, RSA,
Prometheus or matplotlib.

Each outside library is imported by exactly one adapter module (the layers of
``docs/image-generation/architecture.md``).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import sakaibot

PACKAGE = Path(sakaibot.__file__).parent
CORE_MODULES = [
    "admission.py",
    "albums.py",
    "app.py",
    "bot.py",
    "captions.py",
    "commands.py",
    "errors.py",
    "generation.py",
    "jobs.py",
    "limits.py",
    "models.py",
    "pipeline.py",
    "queues.py",
    "recovery.py",
    "reports.py",
    "breaker.py",
    "shared/interfaces.py",
    "shared/generator.py",
    "shared/worker.py",
    "shared/allowance.py",
    "shared/cache.py",
    "shared/outage.py",
    "cache.py",
    "store/__init__.py",
    "settings.py",
    "status.py",
    "subcommands.py",
    "undelivered.py",
    "chat/port.py",
    "chat/console.py",
    "enhancer/__init__.py",
    "quota.py",
    "health.py",
    "telemetry.py",
]
OUTSIDE_THINGS = {
    "telethon",
    "openai",
    "httpx",
    "sqlite3",
    "aiosqlite",
    "redis",
    "rsa",
    "prompt_toolkit",
    "prometheus_client",
    "matplotlib",
}
#: The one adapter module allowed to import each outside thing.
ADAPTERS = {
    "telethon": {"chat/telegram.py"},
    # Telethon's RSA library: only the Telegram adapter reads a server's key with it.
    "rsa": {"chat/telegram.py"},
    "openai": {"enhancer/llm.py"},
    "httpx": {"workers/client.py"},
    "sqlite3": {"store/sqlite.py"},
    "redis": {"shared/backend.py"},
    # Line editing for `sakaibot chat` on a terminal.
    "prompt_toolkit": {"chat/terminal.py"},
    "prometheus_client": {"metrics.py"},
    "matplotlib": {"charts.py"},
}


def top_level_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text("utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("module", CORE_MODULES)
def test_core_module_imports_no_outside_library(module: str) -> None:
    assert top_level_imports(PACKAGE / module) & OUTSIDE_THINGS == set()


@pytest.mark.parametrize(("library", "allowed"), sorted(ADAPTERS.items()))
def test_each_library_stays_in_its_adapter(library: str, allowed: set[str]) -> None:
    users = {
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        if library in top_level_imports(path)
    }
    assert users == allowed

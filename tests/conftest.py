"""Test-wide isolation: no setting leaks in from the machine's environment or folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from sakaibot.settings import Settings


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)
    # Relative paths (./data, ./out) land in the test's own folder.
    monkeypatch.chdir(tmp_path)

"""Test-wide isolation: no setting leaks in from the machine's environment."""

from __future__ import annotations

import pytest

from sakaibot.settings import Settings


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)

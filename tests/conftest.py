"""Test-wide isolation: no setting leaks in from the machine's environment or folder."""

from __future__ import annotations

import faulthandler
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest

from sakaibot.settings import Settings


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)
    # Relative paths (./data, ./out) land in the test's own folder.
    monkeypatch.chdir(tmp_path)


#: How long one test's teardown may take before the run is stopped.
TEARDOWN_LIMIT_S = 120.0
#: Where the stacks go if a teardown hangs (pytest holds stderr by then);
#: .ci/run prints the file when the run fails.
HANG_REPORT_NAME = "teardown-hang.log"
_HANG_REPORT_KEY = pytest.StashKey[IO[str]]()


def pytest_configure(config: pytest.Config) -> None:
    path = Path(config.rootpath) / HANG_REPORT_NAME
    config.stash[_HANG_REPORT_KEY] = path.open("w", encoding="utf-8")


def pytest_unconfigure(config: pytest.Config) -> None:
    report = config.stash.get(_HANG_REPORT_KEY, None)
    if report is not None:
        report.close()
        Path(report.name).unlink(missing_ok=True)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item: pytest.Item) -> Iterator[None]:
    # pytest-timeout stops timing a test once its body has failed, so a fixture
    # that then waits for ever (a job still held by the failed test) would hang
    # the whole run. Past the limit every thread's stack is written down and
    # the run ends: a failure that says where, never a silent hang.
    report = item.config.stash.get(_HANG_REPORT_KEY, None)
    if report is not None:
        faulthandler.dump_traceback_later(TEARDOWN_LIMIT_S, exit=True, file=report)
    try:
        yield
    finally:
        faulthandler.cancel_dump_traceback_later()

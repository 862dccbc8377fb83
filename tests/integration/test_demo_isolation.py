"""The demo never leaks into a live bot: its own data folder, and cache keys that name the worker.

Seen before: after ``make demo``, a bot pointed at a worker that answered 503
to everything still answered ``/image=flux=a red fox in the snow`` "from
cache" with the development worker's preview, and ``stats``/``history``
listed the demo's users. Each test runs ``sakaibot`` as a subprocess.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from sakaibot.devworker import DevWorker, DevWorkerConfig
from tests.support.cli import run_cli

PROMPT = "/image=flux=a red fox in the snow"


def events_of(done: subprocess.CompletedProcess[str]) -> list[dict[str, Any]]:
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


def demo(*extra: str, **env: str) -> None:
    """What ``make demo`` does, in short: one image from the development worker."""
    events = events_of(
        run_cli(["chat", "--local", "--jsonl", "--out", "out/demo", *extra], PROMPT + "\n", **env)
    )
    assert [e["ok"] for e in events if e["type"] == "result"] == [True]


def live_chat_against_a_failing_worker(*extra: str) -> list[dict[str, Any]]:
    """The same request on the console, with a real (here: always 503) worker."""
    with DevWorker(DevWorkerConfig(fault="503")) as worker_url:
        return events_of(
            run_cli(
                ["chat", "--jsonl", "--out", "out/live", *extra],
                PROMPT + "\n",
                FLUX_WORKER_URL=f"{worker_url}/flux",
                WORKER_MAX_ATTEMPTS="1",
            )
        )


def assert_the_failure_not_a_cached_image(events: list[dict[str, Any]]) -> None:
    [result] = [e for e in events if e["type"] == "result"]
    assert result["ok"] is False
    assert "busy or unreachable" in result["error"]
    assert [e for e in events if e["type"] == "image"] == []


def test_chat_local_keeps_its_data_in_a_folder_of_its_own(tmp_path: Path) -> None:
    # Even a SAKAIBOT_DATA_DIR set for the live bot is left alone.
    demo(SAKAIBOT_DATA_DIR=str(tmp_path / "bot-data"))
    assert (tmp_path / "out" / "demo" / "local-data" / "sakaibot.db").is_file()
    assert not (tmp_path / "bot-data").exists()
    assert not (tmp_path / "data").exists()

    report = run_cli(["history"])
    assert report.returncode == 0, report.stderr
    assert report.stdout.startswith("No data yet in data (SAKAIBOT_DATA_DIR).")


def test_demo_then_a_failing_worker_gives_no_cache_answer(tmp_path: Path) -> None:
    demo()
    assert_the_failure_not_a_cached_image(live_chat_against_a_failing_worker())


def test_a_demo_image_never_answers_for_another_worker_even_in_one_folder(
    tmp_path: Path,
) -> None:
    # The worst case: the demo told to use the bot's own folder. The cache key
    # names the worker, so the preview still cannot answer the live request.
    demo("--data-dir", "data")
    assert (tmp_path / "data" / "sakaibot.db").is_file()
    assert_the_failure_not_a_cached_image(live_chat_against_a_failing_worker())

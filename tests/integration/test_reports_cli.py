"""``sakaibot stats`` and ``sakaibot history`` as subprocesses, over a real store file."""

from __future__ import annotations

import json
import time
from pathlib import Path

from sakaibot.store import JobRecord, StoredJobState
from sakaibot.store.sqlite import SqliteStore
from tests.support.cli import run_cli


def record(job_id: str, user: str, age_s: float, *, now: float, **fields: object) -> JobRecord:
    # One `now` for every record and its finish time: times then differ by exactly
    # what the test says, however slowly the machine builds them.
    values: dict[str, object] = {
        "id": job_id,
        "user_id": user,
        "chat_id": "chat",
        "reply_to": 1,
        "model": "flux",
        "request_json": "{}",
        "prompt": f"prompt of {job_id}",
        "created_at_s": now - age_s,
    }
    values.update(fields)
    return JobRecord(**values)  # type: ignore[arg-type]


async def make_store(data_dir: Path) -> None:
    now = time.time()
    store = SqliteStore(data_dir / "sakaibot.db")
    await store.open()
    try:
        for job in [
            # Older than a week: in history, not in the 7-day statistics.
            record(
                "old1",
                "alice",
                10 * 86_400,
                now=now,
                state=StoredJobState.DONE,
                finished_at_s=now - 10 * 86_400 + 5,
            ),
            record(
                "a1",
                "alice",
                300,
                now=now,
                state=StoredJobState.DONE,
                finished_at_s=now - 290,
                enhancer="original prompt",
            ),
            record(
                "b1",
                "bob",
                200,
                now=now,
                state=StoredJobState.DONE,
                finished_at_s=now - 180,
                cache_hit=True,
                enhancer="OpenRouter (m)",
                model="sdxl",
            ),
            record(
                "a2",
                "alice",
                100,
                now=now,
                state=StoredJobState.FAILED,
                error_kind="worker_timeout",
            ),
            record("a3", "alice", 10, now=now),
        ]:
            await store.add_job(job)
    finally:
        await store.close()


async def test_stats_json_and_text(tmp_path: Path) -> None:
    await make_store(tmp_path)
    done = run_cli(["stats", "--json"], SAKAIBOT_DATA_DIR=str(tmp_path))
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert data["days"] == 7
    assert (data["jobs"], data["done"], data["failed"], data["cancelled"]) == (4, 2, 1, 0)
    assert data["success_rate"] == 2 / 3
    models = {m["model"]: m for m in data["per_model"]}
    assert models["flux"]["count"] == 1
    assert abs(models["flux"]["median_s"] - 10) < 0.01
    assert abs(models["sdxl"]["p95_s"] - 20) < 0.01
    assert data["cache_hits"] == 1
    assert data["enhancer_fallback_rate"] == 0.5
    assert data["errors_by_kind"] == {"worker_timeout": 1}
    assert data["queue"] == []

    text = run_cli(["stats", "--days", "30"], SAKAIBOT_DATA_DIR=str(tmp_path))
    assert text.returncode == 0, text.stderr
    assert "Jobs in the last 30 days: 5 (3 delivered, 1 failed, 0 cancelled, 1 unfinished)" in (
        text.stdout
    )
    assert "Queues now: (only shown in chat)" in text.stdout
    assert "Errors: worker_timeout 1" in text.stdout


async def test_history_json_and_text(tmp_path: Path) -> None:
    await make_store(tmp_path)
    everyone = run_cli(["history", "--json", "--limit", "3"], SAKAIBOT_DATA_DIR=str(tmp_path))
    assert everyone.returncode == 0, everyone.stderr
    data = json.loads(everyone.stdout)
    assert [(d["id"], d["state"]) for d in data] == [
        ("a3", "queued"),
        ("a2", "failed"),
        ("b1", "done"),
    ]
    assert abs(data[2]["total_s"] - 20) < 0.01

    alice = run_cli(["history", "--user", "alice", "--json"], SAKAIBOT_DATA_DIR=str(tmp_path))
    assert alice.returncode == 0, alice.stderr
    assert [d["id"] for d in json.loads(alice.stdout)] == ["a3", "a2", "a1", "old1"]

    text = run_cli(["history", "--limit", "2"], SAKAIBOT_DATA_DIR=str(tmp_path))
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert lines[0] == "Last 2 images:"
    assert lines[1].startswith("• a3 @alice flux ")
    assert lines[1].endswith("ago: waiting — prompt of a3")
    assert "failed (the worker took too long) — prompt of a2" in lines[2]


def test_no_data_yet(tmp_path: Path) -> None:
    data_dir = tmp_path / "nothing"
    for command in ("stats", "history"):
        done = run_cli([command], SAKAIBOT_DATA_DIR=str(data_dir))
        assert done.returncode == 0, done.stderr
        assert done.stdout == f"No data yet in {data_dir} (SAKAIBOT_DATA_DIR).\n"
    as_json = run_cli(["history", "--json"], SAKAIBOT_DATA_DIR=str(data_dir))
    assert as_json.returncode == 0
    assert json.loads(as_json.stdout) == []
    assert "No data yet" in as_json.stderr
    stats = run_cli(["stats", "--json"], SAKAIBOT_DATA_DIR=str(data_dir))
    assert json.loads(stats.stdout)["jobs"] == 0
    # Reporting never creates the data directory.
    assert not data_dir.exists()


def test_bad_limit_is_a_usage_error(tmp_path: Path) -> None:
    done = run_cli(["history", "--limit", "0"], SAKAIBOT_DATA_DIR=str(tmp_path))
    assert done.returncode == 2
    assert "must be at least 1" in done.stderr


async def test_reports_read_beside_a_running_bot(tmp_path: Path) -> None:
    await make_store(tmp_path)
    running = SqliteStore(tmp_path / "sakaibot.db")  # the bot holds the folder
    await running.open()
    try:
        done = run_cli(["stats", "--json"], SAKAIBOT_DATA_DIR=str(tmp_path))
    finally:
        await running.close()
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["jobs"] == 4

"""A real restart: SIGKILL the console bot while jobs wait and one generates, start it again.

Every accepted job must end with exactly one delivered image across both lives.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from sakaibot.settings import Settings

COMMANDS = [
    ("you", "/image=flux=a red fox in the snow"),
    ("alice", "/image=flux=a lighthouse at dusk"),
    ("bob", "/image=sdxl=a tiny robot --seed 4"),
    ("carol", "/image=flux=a bonsai tree --file"),
]


def environment(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k.lower() not in Settings.model_fields}
    env.update(
        {"LLM_PROVIDER": "none", "STATUS_EDIT_INTERVAL_S": "0", "SAKAIBOT_DATA_DIR": str(data_dir)}
    )
    return env


def chat_command(out_dir: Path, data_dir: Path, latency_ms: int) -> list[str]:
    # --local keeps its data beside the images unless told where: here, the
    # folder both runs share, so that the second recovers the first's jobs.
    return [
        sys.executable, "-m", "sakaibot", "--env-file", "none", "chat", "--local", "--jsonl",
        "--out", str(out_dir), "--data-dir", str(data_dir),
        "--worker-latency-ms", str(latency_ms),
    ]  # fmt: skip


def test_sigkill_while_jobs_wait_and_generate_loses_nothing(tmp_path: Path) -> None:
    data_dir, out_dir = tmp_path / "data", tmp_path / "out"
    first = subprocess.Popen(
        # The first job is still generating when killed.
        chat_command(out_dir, data_dir, latency_ms=60_000),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=environment(data_dir),
    )
    assert first.stdin is not None
    assert first.stdout is not None
    for user, text in COMMANDS:
        first.stdin.write(f"@{user} {text}\n")
    first.stdin.flush()
    events_before: list[dict[str, object]] = []
    inputs: dict[int, str] = {}
    told: set[object] = set()
    try:
        # Wait until every command was answered with a status: all accepted and told.
        while len(told) < len(COMMANDS):
            line = first.stdout.readline()
            assert line, f"the bot stopped early: {first.stderr.read() if first.stderr else ''}"
            event = json.loads(line)
            events_before.append(event)
            if event["type"] == "in":
                inputs[int(event["id"])] = str(event["text"])
            elif event["type"] == "send" and event["reply_to"] in inputs:
                told.add(event["reply_to"])
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
        first.stdout.close()
        first.stdin.close()
        if first.stderr is not None:
            first.stderr.close()
    assert not [e for e in events_before if e["type"] == "image"]

    second = subprocess.run(
        chat_command(out_dir, data_dir, latency_ms=0),
        input="",
        capture_output=True,
        text=True,
        timeout=120,
        env=environment(data_dir),
        check=False,
    )
    assert second.returncode == 0, second.stderr
    events_after = [json.loads(line) for line in second.stdout.splitlines()]

    images = [e for e in events_before + events_after if e["type"] == "image"]
    # Exactly one image per accepted command, each answering its own command.
    assert sorted(int(e["reply_to"]) for e in images) == sorted(inputs)
    files = sorted(p.name for p in out_dir.iterdir())
    assert len(files) == len(COMMANDS)
    assert not [name for name in files if name.endswith(".partial")]
    # The recovered jobs report how they ended, for scripts reading --jsonl.
    results = [e for e in events_after if e["type"] == "result"]
    assert sorted(int(r["reply_to"]) for r in results) == sorted(inputs)
    assert all(r["ok"] for r in results)

"""``sakaibot`` as an operator starts it with a broken ``.env``: one clear line, no traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from sakaibot.settings import Settings


def run_with_env_file(env_file: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k.lower() not in Settings.model_fields}
    clean.update(env)
    return subprocess.run(
        [sys.executable, "-m", "sakaibot", "--env-file", str(env_file), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=clean,
        cwd=env_file.parent,
        check=False,
    )


@pytest.mark.parametrize("command", ["verify", "chat", "run"])
def test_a_binary_env_file_is_one_clear_line(tmp_path: Path, command: str) -> None:
    env_file = tmp_path / ".env"
    env_file.write_bytes(bytes(range(255, -1, -1)) * 4)
    done = run_with_env_file(env_file, command)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert done.stderr.splitlines() == [
        "SakaiBot is not configured correctly:",
        f"- {env_file} is not UTF-8 text (byte 0 cannot be read); it must be a text file of "
        "NAME=value lines in UTF-8 (see .env.example)",
    ]


def test_a_bad_redis_port_is_one_line_without_the_password(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text(
        "REDIS_URL=redis://:hunter2@127.0.0.1:99999/0\nFLUX_WORKER_URL=http://127.0.0.1:9/\n",
        "utf-8",
    )
    done = run_with_env_file(env_file, "chat")
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert "hunter2" not in done.stderr + done.stdout
    lines = done.stderr.splitlines()
    assert lines[0] == "SakaiBot is not configured correctly:"
    assert lines[1].startswith("- REDIS_URL: is not a valid Redis URL")
    assert len(lines) == 2


def test_an_empty_llm_provider_in_env_file_is_unset(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("LLM_PROVIDER=\nOPENROUTER_MODEL=\nSAKAIBOT_DATA_DIR=\n", "utf-8")
    done = run_with_env_file(env_file, "verify")
    assert "LLM_PROVIDER" not in done.stderr
    assert "not configured correctly" not in done.stderr
    assert "Traceback" not in done.stderr

"""``sakaibot login`` as a subprocess with real Telethon, against a port nobody answers on."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from sakaibot.settings import Settings


@pytest.fixture
def refusing_port() -> Iterator[int]:
    """A 127.0.0.1 port that is bound but not listening: every connection is refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as held:
        held.bind(("127.0.0.1", 0))
        yield held.getsockname()[1]


def test_no_network_is_one_line_and_leaves_no_session_file(
    tmp_path: Path, refusing_port: int
) -> None:
    data_dir = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if k.lower() not in Settings.model_fields}
    env.update(
        TELEGRAM_API_ID="1",
        TELEGRAM_API_HASH="x",
        TELEGRAM_SERVER=f"2@127.0.0.1:{refusing_port}",
        SAKAIBOT_DATA_DIR=str(data_dir),
    )
    done = subprocess.run(
        [sys.executable, "-m", "sakaibot", "--env-file", "none", "login"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    where = f"custom server DC 2 at 127.0.0.1:{refusing_port}"
    assert done.returncode == 1
    assert done.stdout == f"Logging in on {where}.\n"
    # Telethon's "Connecting to ..." and "Attempt 1 at connecting failed" stay out.
    assert done.stderr == (
        f"Could not reach Telegram (ConnectionError from {where}). Check the network "
        "connection (and TELEGRAM_SERVER, if you set it), then run `sakaibot login` again.\n"
    )
    assert not (data_dir / "sakaibot.session").exists()

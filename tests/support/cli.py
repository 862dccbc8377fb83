"""Run ``sakaibot`` as a subprocess, as a user would, with no setting from this machine."""

from __future__ import annotations

import os
import subprocess
import sys

from sakaibot.settings import Settings

#: The time one command may take before the test fails.
CLI_TIMEOUT_S = 60.0


def run_cli(args: list[str], stdin: str = "", **env: str) -> subprocess.CompletedProcess[str]:
    """``python -m sakaibot --env-file none ARGS``; no LLM or status pacing unless ``env`` says."""
    clean = {k: v for k, v in os.environ.items() if k.lower() not in Settings.model_fields}
    clean.update({"LLM_PROVIDER": "none", "STATUS_EDIT_INTERVAL_S": "0"})
    clean.update(env)
    return subprocess.run(
        [sys.executable, "-m", "sakaibot", "--env-file", "none", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
        env=clean,
        check=False,
    )

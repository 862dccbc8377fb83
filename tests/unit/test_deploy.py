"""The files in ``deploy/`` agree with the command line, the settings and each other.

CI neither builds the image nor starts the unit (no Docker registry, no
systemd here); these checks keep the files from drifting from the code.
"""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from pathlib import Path

from sakaibot.cli import _build_parser
from sakaibot.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"


def unit_settings() -> dict[str, list[str]]:
    values: dict[str, list[str]] = {}
    for line in (DEPLOY / "sakaibot.service").read_text("utf-8").splitlines():
        if line.strip() and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            values.setdefault(key.strip(), []).append(value.strip())
    return values


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = (DEPLOY / "Dockerfile").read_text("utf-8").replace("\\\n", " ")
    found = []
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            word, _, rest = line.strip().partition(" ")
            found.append((word.upper(), rest.strip()))
    return found


def test_the_unit_runs_a_real_subcommand_as_its_own_user_with_the_data_folder_writable() -> None:
    unit = unit_settings()
    [exec_start] = unit["ExecStart"]
    binary, *argv = shlex.split(exec_start)
    assert binary.endswith("/.venv/bin/sakaibot")
    assert _build_parser().parse_args(argv).command == "run"
    assert unit["User"] != ["root"]
    assert unit["Restart"] == ["on-failure"]
    assert unit["NoNewPrivileges"] == ["yes"]
    assert unit["ProtectSystem"] == ["strict"]
    assert unit["WorkingDirectory"][0] in unit["ReadWritePaths"][0].split()
    assert unit["EnvironmentFile"] == ["/etc/sakaibot/sakaibot.env"]
    # Stopping waits for running jobs (SHUTDOWN_GRACE_S) before systemd kills them.
    default_grace_s = Settings.model_fields["shutdown_grace_s"].default
    assert int(unit["TimeoutStopSec"][0]) > default_grace_s


def test_the_image_installs_the_package_as_a_non_root_user_with_a_data_volume() -> None:
    instructions = dockerfile_instructions()
    words = dict(instructions)
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))["project"]
    minimum = re.fullmatch(r">=(\d+\.\d+)", requires["requires-python"])
    assert minimum is not None
    assert words["FROM"] == f"python:{minimum.group(1)}-slim"
    assert words["USER"] not in {"root", "0"}
    assert words["VOLUME"] == "/data"
    assert ("ENV", "SAKAIBOT_DATA_DIR=/data") in instructions
    for word, rest in instructions:
        if word == "COPY":
            for source in rest.split()[:-1]:
                assert (ROOT / source).exists(), f"COPY {source}: no such file in the repository"
    argv = json.loads(words["ENTRYPOINT"])[1:] + json.loads(words["CMD"])
    assert _build_parser().parse_args(argv).command == "run"


def test_the_compose_file_names_the_image_the_volume_and_an_optional_redis() -> None:
    # No YAML library is a dependency; the checks read the text.
    text = (DEPLOY / "compose.yaml").read_text("utf-8")
    assert "dockerfile: deploy/Dockerfile" in text
    assert re.search(r"^\s+- sakaibot-data:/data$", text, re.MULTILINE)
    assert re.search(r"^\s+SAKAIBOT_DATA_DIR: /data$", text, re.MULTILINE)
    assert re.search(r'^\s+profiles: \["redis"\]$', text, re.MULTILINE)
    assert re.search(r"^volumes:\n  sakaibot-data:\n", text, re.MULTILINE)
    assert "\t" not in text  # YAML refuses tabs


def test_the_docs_say_what_ci_builds_and_use_the_unit() -> None:
    quickstart = (ROOT / "docs" / "image-generation" / "quickstart.md").read_text("utf-8")
    assert "deploy/sakaibot.service" in quickstart
    assert "deploy/Dockerfile" in quickstart
    assert "CI does not build" in quickstart

"""The ``sakaibot`` command line's arguments: --version, shared options, help text."""

from __future__ import annotations

import argparse
import io
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from sakaibot import __version__
from sakaibot.cli import _build_parser, main


def subparsers(parser: argparse.ArgumentParser) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            yield from action.choices.items()


def test_version_prints_the_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out == f"sakaibot {__version__}\n"


@pytest.mark.parametrize(
    "argv",
    [
        ["-v", "--env-file", "live.env", "stats"],
        ["stats", "-v", "--env-file", "live.env"],
        ["--env-file", "live.env", "stats", "--verbose"],
        ["-v", "stats", "--env-file", "live.env"],
    ],
)
def test_verbose_and_env_file_may_come_before_or_after_the_subcommand(argv: list[str]) -> None:
    args = _build_parser().parse_args(argv)
    assert (args.command, args.verbose, args.env_file) == ("stats", True, Path("live.env"))


def test_a_subcommand_without_them_keeps_the_defaults_or_the_values_before_it() -> None:
    parser = _build_parser()
    plain = parser.parse_args(["run"])
    assert (plain.verbose, plain.env_file) == (False, Path(".env"))
    before = parser.parse_args(["-v", "--env-file", "none", "verify"])
    assert (before.verbose, before.env_file, before.telegram) == (True, Path("none"), False)


def test_the_env_file_after_the_subcommand_is_the_one_read(tmp_path: Path) -> None:
    (tmp_path / "live.env").write_text("SAKAIBOT_DATA_DIR=from-the-file\n", encoding="utf-8")
    out = io.StringIO()
    assert main(["history", "--env-file", str(tmp_path / "live.env")], out=out) == 0
    assert out.getvalue() == "No data yet in from-the-file (SAKAIBOT_DATA_DIR).\n"


def test_every_option_of_every_command_has_help_text() -> None:
    parser = _build_parser()
    missing = [
        f"{name}: {action.dest}"
        for name, sub in [("sakaibot", parser), *subparsers(parser)]
        for action in sub._actions
        if not isinstance(action, argparse._SubParsersAction)
        and (action.help is None or not action.help.strip())
    ]
    assert missing == []
    # The walk really saw the subcommands.
    assert {"chat", "dev-worker", "generate", "run", "verify"} <= dict(subparsers(parser)).keys()


def test_chat_local_defaults_its_data_folder_beside_its_images() -> None:
    from sakaibot.cli import _chat_data

    parser = _build_parser()
    local = _chat_data(parser.parse_args(["chat", "--local", "--out", "out/demo"]))
    assert local == {"sakaibot_data_dir": Path("out/demo/local-data"), "redis_url": None}
    chosen = _chat_data(parser.parse_args(["chat", "--local", "--data-dir", "elsewhere"]))
    assert chosen["sakaibot_data_dir"] == Path("elsewhere")
    assert _chat_data(parser.parse_args(["chat"])) == {}  # the configured SAKAIBOT_DATA_DIR


def test_help_imports_none_of_the_heavy_libraries() -> None:
    # A fresh interpreter: what `sakaibot --help` loads, and nothing more.
    code = (
        "import runpy, sys\n"
        "sys.argv = ['sakaibot', '--help']\n"
        "try:\n"
        "    runpy.run_module('sakaibot', run_name='__main__')\n"
        "except SystemExit:\n"
        "    pass\n"
        "heavy = {'openai', 'telethon', 'httpx', 'PIL', 'tenacity', 'pydantic',\n"
        "         'sqlite3', 'redis'}\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & heavy), file=sys.stderr)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True
    )
    assert done.stderr.strip() == "[]"

"""``sakaibot`` run as a subprocess: the console front end, --local, generate."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from PIL import Image

from sakaibot.settings import Settings
from tests.support.cli import run_cli

CONVERSATION = "\n".join(
    [
        "/image=flux=a red fox in the snow",
        "@alice /image=SDXL=a lighthouse = tall --ar 9:16 --seed 5",
        "@alice /image=dalle=a cat",
        "/image=flux=",
        "hello, not a command",
        "/image=flux=a robot --file",
        "/image models",
    ]
)


def test_jsonl_conversation_end_to_end(tmp_path: Path) -> None:
    done = run_cli(["chat", "--local", "--jsonl", "--out", str(tmp_path)], CONVERSATION + "\n")
    assert done.returncode == 0, done.stderr
    events = [json.loads(line) for line in done.stdout.splitlines()]
    inputs = [e for e in events if e["type"] == "in"]
    assert [e["user"] for e in inputs] == ["you", "alice", "alice", "you", "you", "you", "you"]
    assert inputs[1]["text"] == "/image=SDXL=a lighthouse = tall --ar 9:16 --seed 5"

    results = {e["reply_to"]: e for e in events if e["type"] == "result"}
    # Exactly one result per /image= command: five of them, rejections included.
    assert len([e for e in events if e["type"] == "result"]) == 5
    by_input = {i["text"]: results.get(i["id"]) for i in inputs}
    assert by_input["/image=flux=a red fox in the snow"]["ok"] is True
    assert by_input["/image=dalle=a cat"] == {
        "type": "result",
        "reply_to": inputs[2]["id"],
        "ok": False,
        "job": None,
        "model": "dalle",
        "error": "Unknown model 'dalle'. Available models: flux, sdxl. "
        "Example: /image=flux=a red fox in the snow",
    }
    assert by_input["/image=flux="]["error"].startswith("The prompt is empty.")
    assert by_input["hello, not a command"] is None
    assert by_input["/image models"] is None

    images = {e["reply_to"]: e for e in events if e["type"] == "image"}
    assert len(images) == 3
    lighthouse = images[inputs[1]["id"]]
    assert lighthouse["path"].endswith(".png")
    with Image.open(lighthouse["path"]) as picture:
        assert picture.size == (768, 1344)
    assert "seed 5" in lighthouse["caption"]
    assert "a lighthouse = tall" in lighthouse["caption"]
    robot = images[inputs[5]["id"]]
    assert robot["as_file"] is True
    assert robot["path"].endswith(".jpg")
    assert Path(robot["path"]).read_bytes()[:3] == b"\xff\xd8\xff"

    # Every status message sent for a job was removed once its image was out.
    sent = {e["id"] for e in events if e["type"] == "send" and e["text"].startswith(("⏳", "🎨"))}
    deleted = {e["id"] for e in events if e["type"] == "delete"}
    assert sent <= deleted


def test_an_album_is_one_image_event_per_image_and_one_result(tmp_path: Path) -> None:
    done = run_cli(
        ["chat", "--local", "--jsonl", "--out", str(tmp_path)],
        "/image=flux=a red fox --n 3 --seed 7\n",
    )
    assert done.returncode == 0, done.stderr
    events = [json.loads(line) for line in done.stdout.splitlines()]
    [command] = [e for e in events if e["type"] == "in"]
    images = [e for e in events if e["type"] == "image"]
    assert [e["reply_to"] for e in images] == [command["id"]] * 3
    assert len({e["path"] for e in images}) == 3
    assert all(Path(e["path"]).is_file() for e in images)
    caption = images[0]["caption"]
    assert "1: seed 7" in caption
    assert "2: seed 8" in caption
    assert "3: seed 9" in caption
    assert [e["caption"] for e in images[1:]] == ["", ""]
    [result] = [e for e in events if e["type"] == "result"]
    assert result["ok"] is True
    assert result["reply_to"] == command["id"]
    assert f"#{result['job']}" in caption
    # One status message for the request, removed once the album is out.
    sent = [e for e in events if e["type"] == "send"]
    assert len(sent) == 1
    assert [e["id"] for e in events if e["type"] == "delete"] == [sent[0]["id"]]


def test_without_a_worker_it_says_how_to_fix_it(tmp_path: Path) -> None:
    done = run_cli(["chat", "--out", str(tmp_path)], "/image=flux=x\n")
    assert done.returncode == 2
    assert "No image worker is configured" in done.stderr
    assert "sakaibot chat --local" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_bad_setting_is_one_clear_message(tmp_path: Path) -> None:
    done = run_cli(["chat", "--local"], "", IMAGE_USER_LIMITS="ten a minute")
    assert done.returncode == 2
    assert "IMAGE_USER_LIMITS: 'ten a minute' is not a limit" in done.stderr
    assert "Traceback" not in done.stderr


def test_generate_writes_the_file_with_the_real_extension(tmp_path: Path) -> None:
    target = tmp_path / "fox.png"
    done = run_cli(["generate", "flux", "a red fox", "-o", str(target), "--local"])
    assert done.returncode == 0, done.stderr
    written = tmp_path / "fox.jpg"  # flux answers JPEG, whatever the name asked for
    assert written.read_bytes()[:3] == b"\xff\xd8\xff"
    assert not target.exists()


def test_generate_failure_exits_non_zero(tmp_path: Path) -> None:
    done = run_cli(
        [
            "generate",
            "flux",
            "a red fox",
            "-o",
            str(tmp_path / "x.jpg"),
            "--local",
            "--worker-fail-rate",
            "1",
            "--worker-fail-status",
            "401",
        ]
    )
    assert done.returncode == 1
    assert "refused our credentials" in done.stdout


def test_chat_with_no_input_at_all_exits(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "sakaibot", "--env-file", "none", "chat", "--local"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        env={k: v for k, v in os.environ.items() if k.lower() not in Settings.model_fields},
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr


def test_an_overlong_piped_line_is_refused_and_later_commands_still_run(tmp_path: Path) -> None:
    script = "/image=flux=" + "x" * 200_000 + "\n/image=flux=a red fox\n"
    done = run_cli(["chat", "--local", "--jsonl", "--out", str(tmp_path)], script)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    events = [json.loads(line) for line in done.stdout.splitlines()]
    inputs = [e for e in events if e["type"] == "in"]
    assert [e["text"][:12] for e in inputs] == ["/image=flux=", "/image=flux="]
    refusal = [e for e in events if e["type"] == "send" and e["reply_to"] == inputs[0]["id"]]
    assert refusal[0]["text"].startswith("❌ That line is longer than 64 KiB")
    results = [e for e in events if e["type"] == "result"]
    assert [(r["reply_to"], r["ok"]) for r in results] == [(inputs[1]["id"], True)]

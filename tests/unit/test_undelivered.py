"""Images that could not be sent: kept per user, within retention, never by path tricks."""

from __future__ import annotations

from pathlib import Path

from sakaibot.captions import Caption, CaptionPart
from sakaibot.chat.port import OutgoingImage
from sakaibot.undelivered import UndeliveredImages
from tests.support.fakes import FakeClock, tiny_image


def outgoing() -> OutgoingImage:
    caption = Caption((CaptionPart("🎨 "), CaptionPart("Flux", bold=True), CaptionPart(" <&>")))
    return OutgoingImage(tiny_image("PNG"), caption, "sakaibot-flux-ab12cd.png", as_file=True)


def store(tmp_path: Path, clock: FakeClock) -> UndeliveredImages:
    return UndeliveredImages(tmp_path / "undelivered", retention_s=3600, clock=clock)


def test_kept_image_comes_back_whole(tmp_path: Path) -> None:
    clock = FakeClock()
    kept = store(tmp_path, clock)
    assert kept.keep(job_id="ab12cd", user_id="ann", chat_id="-100", reply_to=7, image=outgoing())
    back = kept.take("ab12cd", "ann")
    assert back is not None
    assert (back.chat_id, back.reply_to) == ("-100", 7)
    assert back.image == outgoing()


def test_only_the_owner_of_the_job_gets_it(tmp_path: Path) -> None:
    kept = store(tmp_path, FakeClock())
    kept.keep(job_id="ab12cd", user_id="ann", chat_id="c", reply_to=1, image=outgoing())
    assert kept.take("ab12cd", "bob") is None


def test_retention_prunes_old_images(tmp_path: Path) -> None:
    clock = FakeClock()
    kept = store(tmp_path, clock)
    kept.keep(job_id="ab12cd", user_id="ann", chat_id="c", reply_to=1, image=outgoing())
    clock.advance(3601)
    assert kept.take("ab12cd", "ann") is None
    assert list((tmp_path / "undelivered").iterdir()) == []


def test_ids_cannot_reach_outside_the_folder(tmp_path: Path) -> None:
    (tmp_path / "secret.json").write_text('{"user_id": "ann"}')
    kept = store(tmp_path, FakeClock())
    assert kept.take("../secret", "ann") is None
    kept.forget("../secret")
    assert (tmp_path / "secret.json").exists()


def test_a_disk_that_refuses_is_reported_not_raised(tmp_path: Path) -> None:
    blocker = tmp_path / "undelivered"
    blocker.write_text("a file where the folder should be")
    kept = UndeliveredImages(blocker, retention_s=60, clock=FakeClock())
    assert not kept.keep(job_id="ab12cd", user_id="a", chat_id="c", reply_to=1, image=outgoing())

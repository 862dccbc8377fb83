"""Images that were made but could not be sent, kept on disk for ``/image retry``.

A generated image is never silently lost: when the chat refuses the upload,
the bytes and what is needed to send them again are written under the data
directory and kept for ``UNDELIVERED_RETENTION_S``. The methods do plain
file I/O; callers run them off the event loop (``asyncio.to_thread``).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sakaibot.captions import Caption, CaptionPart
from sakaibot.chat.port import OutgoingImage
from sakaibot.generation import GeneratedImage
from sakaibot.private_files import make_private_dir, write_private

logger = logging.getLogger(__name__)

_JOB_ID_RE = re.compile(r"^[0-9a-z]{1,32}$")


@dataclass(frozen=True)
class KeptImage:
    """One undelivered image and where it was meant to go."""

    job_id: str
    user_id: str
    chat_id: str
    reply_to: int
    image: OutgoingImage


class UndeliveredImages:
    """A directory of ``<job>.<ext>`` images with ``<job>.json`` beside each."""

    def __init__(self, directory: Path, *, retention_s: float, clock: Callable[[], float]) -> None:
        self._directory = directory
        self._retention_s = retention_s
        #: Wall-clock time: kept files outlive the process.
        self._clock = clock

    @property
    def retention_s(self) -> float:
        return self._retention_s

    def keep(
        self, *, job_id: str, user_id: str, chat_id: str, reply_to: int, image: OutgoingImage
    ) -> bool:
        """Keep ``image`` for a retry; ``False`` (logged) when the disk refuses."""
        self.prune()
        picture = image.image
        record = {
            "job_id": job_id,
            "user_id": user_id,
            "chat_id": chat_id,
            "reply_to": reply_to,
            "filename": image.filename,
            "as_file": image.as_file,
            "caption": [[part.text, part.bold] for part in image.caption.parts],
            "mime_type": picture.mime_type,
            "extension": picture.extension,
            "width": picture.width,
            "height": picture.height,
            "kept_at": self._clock(),
        }
        try:
            make_private_dir(self._directory)
            write_private(self._directory / f"{job_id}{picture.extension}", picture.data)
            write_private(self._directory / f"{job_id}.json", json.dumps(record).encode())
        except OSError:
            logger.exception("could not keep the undelivered image of job %s", job_id)
            return False
        return True

    def take(self, job_id: str, user_id: str) -> KeptImage | None:
        """The kept image of ``job_id`` if it is ``user_id``'s and still within retention."""
        if not _JOB_ID_RE.match(job_id):
            return None
        self.prune()
        meta_path = self._directory / f"{job_id}.json"
        try:
            record = json.loads(meta_path.read_text("utf-8"))
            if str(record["user_id"]) != user_id:
                return None
            data = (self._directory / f"{job_id}{record['extension']}").read_bytes()
        except (OSError, ValueError, KeyError):
            return None
        caption = Caption(tuple(CaptionPart(text, bold) for text, bold in record["caption"]))
        picture = GeneratedImage(
            data=data,
            mime_type=record["mime_type"],
            extension=record["extension"],
            width=int(record["width"]),
            height=int(record["height"]),
        )
        return KeptImage(
            job_id=job_id,
            user_id=user_id,
            chat_id=str(record["chat_id"]),
            reply_to=int(record["reply_to"]),
            image=OutgoingImage(
                image=picture,
                caption=caption,
                filename=str(record["filename"]),
                as_file=bool(record["as_file"]),
            ),
        )

    def forget(self, job_id: str) -> None:
        if not _JOB_ID_RE.match(job_id):
            return
        for path in self._directory.glob(f"{job_id}.*"):
            path.unlink(missing_ok=True)

    def prune(self) -> int:
        """Delete what is past retention; returns how many images went."""
        if not self._directory.is_dir():
            return 0
        oldest_kept_s = self._clock() - self._retention_s
        removed = 0
        for meta_path in self._directory.glob("*.json"):
            try:
                kept_at = float(json.loads(meta_path.read_text("utf-8"))["kept_at"])
            except (OSError, ValueError, KeyError):
                kept_at = 0.0
            if kept_at < oldest_kept_s:
                self.forget(meta_path.stem)
                removed += 1
        return removed

"""Generated images on disk, named by the SHA-256 of their bytes.

The result cache, ``/image resend`` and recovery after a crash all read
images from here. Files are written atomically (a temporary name, then a
rename) and off the event loop.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from pathlib import Path

from sakaibot.errors import InvalidImage
from sakaibot.generation import GeneratedImage
from sakaibot.private_files import make_private_dir, write_private
from sakaibot.workers.images import inspect_image

_EXTENSIONS = (".jpg", ".png", ".webp", ".gif")
_HEX_DIGITS = frozenset("0123456789abcdef")


def image_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class ImageFiles:
    """A folder of ``<sha256><ext>`` files."""

    def __init__(self, directory: Path) -> None:
        self._directory = directory
        #: Bytes on disk, counted once and then kept up to date, so that
        #: checking the cap does not list the folder for every new image.
        self._size_bytes: int | None = None

    def _path(self, digest: str, extension: str) -> Path:
        if len(digest) != 64 or not _HEX_DIGITS.issuperset(digest) or extension not in _EXTENSIONS:
            raise ValueError("not a stored image name")
        return self._directory / f"{digest}{extension}"

    def path_of(self, digest: str, extension: str) -> Path:
        """Where the image ``digest`` is kept (it may have been evicted since)."""
        return self._path(digest, extension)

    def _put_sync(self, image: GeneratedImage) -> str:
        digest = image_hash(image.data)
        path = self._path(digest, image.extension)
        if not path.exists():
            if self._size_bytes is not None:
                self._size_bytes += len(image.data)
            make_private_dir(self._directory)
            # A name of its own: the same image may be kept twice at once.
            partial = path.with_name(f"{path.name}.{secrets.token_hex(4)}.partial")
            write_private(partial, image.data, sync=True)
            partial.replace(path)
        return digest

    async def put(self, image: GeneratedImage) -> str:
        """Keep ``image``; returns its hash (the same bytes are kept once)."""
        return await asyncio.to_thread(self._put_sync, image)

    def _get_sync(self, digest: str, extension: str) -> GeneratedImage | None:
        try:
            data = self._path(digest, extension).read_bytes()
        except (OSError, ValueError):
            return None
        try:
            mime_type, real_extension, width, height = inspect_image(data)
        except InvalidImage:
            return None  # a damaged file is as good as gone
        return GeneratedImage(data, mime_type, real_extension, width, height)

    async def get(self, digest: str, extension: str) -> GeneratedImage | None:
        """The stored image, or ``None`` once it has been evicted."""
        return await asyncio.to_thread(self._get_sync, digest, extension)

    def _usage_sync(self) -> list[tuple[Path, int, float]]:
        if not self._directory.is_dir():
            return []
        files = []
        for path in self._directory.iterdir():
            if path.suffix in _EXTENSIONS:
                stat = path.stat()
                files.append((path, stat.st_size, stat.st_mtime))
        return files

    def _size_sync(self) -> int:
        if self._size_bytes is None:
            self._size_bytes = sum(size for _, size, _ in self._usage_sync())
        return self._size_bytes

    async def size_bytes(self) -> int:
        if self._size_bytes is not None:  # known: no need to leave the event loop
            return self._size_bytes
        return await asyncio.to_thread(self._size_sync)

    def _evict_sync(self, protect: set[str], max_bytes: int) -> int:
        if self._size_sync() <= max_bytes:
            return 0
        files = sorted(self._usage_sync(), key=lambda item: item[2])
        total = sum(size for _, size, _ in files)
        removed = 0
        for path, size, _mtime in files:
            if total <= max_bytes:
                break
            if path.stem in protect:
                continue
            path.unlink(missing_ok=True)
            total -= size
            removed += 1
        self._size_bytes = total
        return removed

    async def evict(self, *, protect: set[str], max_bytes: int) -> int:
        """Delete the oldest images until under ``max_bytes``, never one in ``protect``."""
        return await asyncio.to_thread(self._evict_sync, protect, max_bytes)

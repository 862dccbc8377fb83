"""Generated images kept on disk under the SHA-256 of their bytes."""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import pytest
from PIL import Image

from sakaibot.generation import GeneratedImage
from sakaibot.store.images import ImageFiles, image_hash
from tests.support.fakes import tiny_image


def sized(size: int, fill: bytes) -> GeneratedImage:
    """Bytes of an exact size; eviction only looks at sizes and times."""
    return GeneratedImage(fill * size, "image/jpeg", ".jpg", 1, 1)


def names_in(directory: Path) -> list[str]:
    """The file names in ``directory``, sorted (none when it does not exist)."""
    return sorted(p.name for p in directory.iterdir()) if directory.is_dir() else []


def coloured(colour: tuple[int, int, int]) -> GeneratedImage:
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4), colour).save(buffer, format="JPEG")
    return GeneratedImage(buffer.getvalue(), "image/jpeg", ".jpg", 4, 4)


@pytest.fixture
def directory(tmp_path: Path) -> Path:
    return tmp_path / "data" / "images"


@pytest.fixture
def images(directory: Path) -> ImageFiles:
    return ImageFiles(directory)


async def test_put_names_the_file_by_the_sha256_of_its_bytes(
    images: ImageFiles, directory: Path
) -> None:
    image = tiny_image("JPEG")

    digest = await images.put(image)

    assert digest == hashlib.sha256(image.data).hexdigest() == image_hash(image.data)
    path = directory / f"{digest}.jpg"
    assert path.read_bytes() == image.data
    assert names_in(directory) == [path.name]


async def test_the_same_bytes_are_kept_once(images: ImageFiles, directory: Path) -> None:
    first = await images.put(tiny_image("JPEG"))
    second = await images.put(tiny_image("JPEG"))
    other = await images.put(coloured((0, 0, 255)))

    assert first == second != other
    assert names_in(directory) == sorted([f"{first}.jpg", f"{other}.jpg"])
    assert await images.size_bytes() == len(tiny_image("JPEG").data) + len(
        coloured((0, 0, 255)).data
    )


@pytest.mark.parametrize(("fmt", "extension"), [("JPEG", ".jpg"), ("PNG", ".png")])
async def test_get_returns_the_stored_image(images: ImageFiles, fmt: str, extension: str) -> None:
    image = tiny_image(fmt)
    digest = await images.put(image)

    stored = await images.get(digest, extension)

    assert stored == image
    assert (stored.mime_type, stored.extension, stored.width, stored.height) == (
        image.mime_type,
        extension,
        8,
        6,
    )
    assert stored.size_bytes == len(image.data)


async def test_get_of_a_missing_image_is_none(images: ImageFiles) -> None:
    assert await images.get("0" * 64, ".jpg") is None  # nothing stored yet, no folder
    digest = await images.put(tiny_image("JPEG"))
    assert await images.get("0" * 64, ".jpg") is None
    assert await images.get(digest, ".png") is None  # same hash, other extension


async def test_no_partial_file_remains_after_put(images: ImageFiles, directory: Path) -> None:
    await images.put(tiny_image("JPEG"))
    await images.put(tiny_image("PNG"))
    await images.put(tiny_image("JPEG"))

    names = names_in(directory)
    assert len(names) == 2
    assert not [name for name in names if "partial" in name]


async def test_put_refuses_an_unknown_extension(images: ImageFiles, directory: Path) -> None:
    with pytest.raises(ValueError, match="not a stored image name"):
        await images.put(GeneratedImage(b"data", "image/bmp", ".bmp", 1, 1))
    assert names_in(directory) == []


async def test_invalid_names_are_never_read(images: ImageFiles, tmp_path: Path) -> None:
    digest = await images.put(tiny_image("JPEG"))
    # A real image just outside the folder, reachable by a 64-character "../" name.
    escape = "../" + "a" * 61
    (tmp_path / "data" / f"{'a' * 61}.jpg").write_bytes(tiny_image("JPEG").data)

    assert await images.get("../x", ".jpg") is None
    assert await images.get(escape, ".jpg") is None
    assert await images.get(digest.upper(), ".jpg") is None
    assert await images.get(digest, ".exe") is None
    assert await images.get(digest, "") is None
    assert await images.get(digest, ".jpg") is not None


async def test_evict_removes_the_oldest_until_under_the_limit_but_never_a_protected_one(
    images: ImageFiles, directory: Path
) -> None:
    names = {}
    for mtime, fill in enumerate([b"a", b"b", b"c", b"d"], start=1):
        digest = await images.put(sized(100, fill))
        os.utime(directory / f"{digest}.jpg", (mtime * 1000, mtime * 1000))
        names[fill] = digest
    (directory / "notes.txt").write_bytes(b"x" * 1000)  # not an image: not counted, kept
    assert await images.size_bytes() == 400

    removed = await images.evict(protect={names[b"a"]}, max_bytes=250)

    assert removed == 2
    left = names_in(directory)
    assert left == sorted([f"{names[b'a']}.jpg", f"{names[b'd']}.jpg", "notes.txt"])
    assert await images.size_bytes() == 200


async def test_evict_does_nothing_under_the_limit_or_when_everything_is_protected(
    images: ImageFiles, directory: Path
) -> None:
    assert await images.evict(protect=set(), max_bytes=0) == 0  # no folder yet
    digests = {await images.put(sized(100, fill)) for fill in (b"a", b"b", b"c")}

    assert await images.evict(protect=set(), max_bytes=300) == 0
    assert await images.evict(protect=digests, max_bytes=0) == 0
    assert len(names_in(directory)) == 3

    assert await images.evict(protect=set(), max_bytes=0) == 3
    assert names_in(directory) == []

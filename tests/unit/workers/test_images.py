"""inspect_image: the format comes from the magic bytes, the size from the header only."""

from __future__ import annotations

import io

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from sakaibot.errors import InvalidImage
from sakaibot.workers.images import inspect_image, sniff_format


def encode(fmt: str, size: tuple[int, int] = (5, 3)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(buffer, fmt)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("fmt", "mime_type", "extension"),
    [
        ("JPEG", "image/jpeg", ".jpg"),
        ("PNG", "image/png", ".png"),
        ("WEBP", "image/webp", ".webp"),
        ("GIF", "image/gif", ".gif"),
    ],
)
def test_formats_are_read_from_the_bytes(fmt: str, mime_type: str, extension: str) -> None:
    assert inspect_image(encode(fmt, (7, 4))) == (mime_type, extension, 7, 4)


@pytest.mark.parametrize("version", [b"GIF87a", b"GIF89a"])
def test_both_gif_versions(version: bytes) -> None:
    data = version + encode("GIF")[6:]
    assert inspect_image(data)[:2] == ("image/gif", ".gif")


def test_only_the_header_is_read() -> None:
    # Half a PNG cannot be decoded, but its header still gives the size.
    noise = Image.effect_noise((640, 480), 64).convert("RGB")
    buffer = io.BytesIO()
    noise.save(buffer, "PNG")
    png = buffer.getvalue()
    assert len(png) > 100_000
    half = png[: len(png) // 2]
    assert inspect_image(half) == ("image/png", ".png", 640, 480)
    with pytest.raises(OSError, match="truncated"), Image.open(io.BytesIO(half)) as image:
        image.load()


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"Please provide a prompt",
        b"<!DOCTYPE html><html><body>Error 1101</body></html>",
        b'{"error": "Unauthorized"}',
        b"RIFF\x24\x00\x00\x00WAVEfmt ",
        b"BM\x00\x00",  # BMP: an image, but not one the bot accepts
    ],
)
def test_non_images_are_refused(data: bytes) -> None:
    with pytest.raises(InvalidImage, match="not a JPEG, PNG, WebP or GIF"):
        inspect_image(data)


@pytest.mark.parametrize(
    "data",
    [
        b"\x89PNG\r\n\x1a\n" + b"garbage" * 4,
        b"\xff\xd8\xff" + b"\x00" * 32,
        b"RIFF\x10\x00\x00\x00WEBPjunkjunk",
        b"GIF89a",
    ],
)
def test_right_magic_with_an_unreadable_header_is_refused(data: bytes) -> None:
    with pytest.raises(InvalidImage, match="unreadable"):
        inspect_image(data)


def test_sniff_ignores_what_follows_the_magic() -> None:
    assert sniff_format(b"\xff\xd8\xff\xe0rest") == ("image/jpeg", ".jpg", "JPEG")
    assert sniff_format(b"RIFF") is None


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=64), st.sampled_from([b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff"]))
def test_any_bytes_give_an_image_or_invalid_image(tail: bytes, prefix: bytes) -> None:
    try:
        mime_type, _, width, height = inspect_image(prefix + tail)
    except InvalidImage:
        return  # the only exception allowed
    assert mime_type.startswith("image/")
    assert width > 0
    assert height > 0

"""What an image really is, read from its bytes rather than from what the worker claims.

The original feature saved every image as ``.png`` whatever the bytes were
(defect 6), and trusted a 200 answer to be an image. Here the format comes
from the magic bytes, and Pillow reads only the header to learn the size, so
a huge or hostile image is never decoded just to be inspected. No I/O.
"""

from __future__ import annotations

import io
import warnings

from PIL import Image

from sakaibot.errors import InvalidImage

#: (magic prefix, offset of the prefix, MIME type, extension, Pillow format name)
_SIGNATURES: tuple[tuple[bytes, int, str, str, str], ...] = (
    (b"\xff\xd8\xff", 0, "image/jpeg", ".jpg", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", 0, "image/png", ".png", "PNG"),
    (b"GIF87a", 0, "image/gif", ".gif", "GIF"),
    (b"GIF89a", 0, "image/gif", ".gif", "GIF"),
)


def sniff_format(data: bytes) -> tuple[str, str, str] | None:
    """``(mime_type, extension, pillow_format)`` from the magic bytes, or ``None``."""
    for magic, offset, mime_type, extension, pillow_format in _SIGNATURES:
        if data[offset : offset + len(magic)] == magic:
            return mime_type, extension, pillow_format
    # WebP is a RIFF container: "RIFF", a 4-byte little-endian size, then "WEBP".
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp", ".webp", "WEBP"
    return None


def inspect_image(data: bytes) -> tuple[str, str, int, int]:
    """Return ``(mime_type, extension, width, height)`` of JPEG, PNG, WebP or GIF bytes.

    Raises :class:`~sakaibot.errors.InvalidImage` for anything else, or when
    Pillow cannot read the header of bytes that look like one of these.
    """
    sniffed = sniff_format(data)
    if sniffed is None:
        raise InvalidImage(f"not a JPEG, PNG, WebP or GIF image ({len(data)} bytes)")
    mime_type, extension, pillow_format = sniffed
    try:
        # A header claiming more pixels than Pillow's bomb limit only warns; it is
        # still just a header read, so the warning must not turn into an error.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            # `formats=` stops Pillow from guessing another format than the magic
            # bytes say; `Image.open` is lazy, so only the header is parsed here.
            with Image.open(io.BytesIO(data), formats=[pillow_format]) as image:
                width, height = image.size
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise InvalidImage(f"unreadable {pillow_format} header: {exc}") from exc
    if width <= 0 or height <= 0:
        raise InvalidImage(f"{pillow_format} header gives an empty size {width}x{height}")
    return mime_type, extension, width, height

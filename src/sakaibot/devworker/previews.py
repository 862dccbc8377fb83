"""The labelled preview images the development worker serves instead of generations.

A preview is a seeded gradient with a banner that says, in so many words, that
it comes from the development worker and is not a generated image, and the
prompt written underneath. The same prompt, seed, size and format always give
the same bytes, so tests and the result cache can compare them. Pillow only.
"""

from __future__ import annotations

import functools
import hashlib
import io
import textwrap
import unicodedata
from typing import Literal

from PIL import Image, ImageDraw, ImageFont

ImageFormat = Literal["JPEG", "PNG"]

#: What every preview says about itself (ASCII, so every font can draw it).
PREVIEW_LABEL = "SakaiBot development worker - PREVIEW, not a generated image"

DEFAULT_SIZE_PX = 512
MIN_SIZE_PX = 64
MAX_SIZE_PX = 1536
#: Side of the one pre-rendered image per format served in fast mode.
FAST_SIZE_PX = 256
#: Prompt characters written on the image; the rest is left out.
MAX_DRAWN_PROMPT_CHARS = 600

MIME_TYPES: dict[ImageFormat, str] = {"JPEG": "image/jpeg", "PNG": "image/png"}


def clamp_size(value: int | None) -> int:
    """A requested side in pixels, kept within what the worker renders."""
    if value is None:
        return DEFAULT_SIZE_PX
    return max(MIN_SIZE_PX, min(MAX_SIZE_PX, value))


@functools.lru_cache(maxsize=32)
def _font(size_px: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size_px)


def _printable(text: str) -> str:
    # Lone surrogates (possible in JSON) cannot be encoded by any font backend.
    text = text.encode("utf-8", "replace").decode("utf-8")
    return "".join(" " if unicodedata.category(ch) == "Cc" else ch for ch in text)


def _draw_text(
    draw: ImageDraw.ImageDraw,
    xy: tuple[int, int],
    text: str,
    font: ImageFont.FreeTypeFont | ImageFont.ImageFont,
    fill: tuple[int, int, int],
) -> None:
    # The bitmap fallback font only knows Latin-1, and a FreeType font may lack
    # glyphs: degrade to replacement characters rather than fail the request.
    for candidate in (text, text.encode("latin-1", "replace").decode("latin-1")):
        try:
            draw.text(xy, candidate, font=font, fill=fill)
        except (UnicodeError, ValueError, OSError):
            continue
        return
    draw.text(xy, text.encode("ascii", "replace").decode("ascii"), font=font, fill=fill)


def _palette(prompt: str, seed: int) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    digest = hashlib.sha256(prompt.encode("utf-8", "surrogatepass") + b"\x00" + str(seed).encode())
    raw = digest.digest()
    # Channels kept in 24..151 so the white text stays readable on both ends.
    top = (24 + raw[0] % 128, 24 + raw[1] % 128, 24 + raw[2] % 128)
    bottom = (24 + raw[3] % 128, 24 + raw[4] % 128, 24 + raw[5] % 128)
    return top, bottom


def render_preview(
    prompt: str,
    *,
    seed: int = 0,
    width: int = DEFAULT_SIZE_PX,
    height: int = DEFAULT_SIZE_PX,
    image_format: ImageFormat = "PNG",
) -> bytes:
    """A labelled preview image: the same arguments always give the same bytes."""
    width, height = clamp_size(width), clamp_size(height)
    top, bottom = _palette(prompt, seed)
    mask = Image.linear_gradient("L").resize((width, height))
    image = Image.composite(
        Image.new("RGB", (width, height), bottom), Image.new("RGB", (width, height), top), mask
    )
    draw = ImageDraw.Draw(image)

    short_side = min(width, height)
    margin = max(4, short_side // 32)
    label_font = _font(max(8, short_side // 30))
    body_font = _font(max(8, short_side // 24))
    white = (255, 255, 255)
    banner = (240, 200, 40)

    # A frame and a banner, so nobody mistakes this for a real generation.
    draw.rectangle((0, 0, width - 1, height - 1), outline=banner, width=max(2, margin // 2))
    label_lines = textwrap.wrap(PREVIEW_LABEL, width=_chars_per_line(label_font, width, margin))
    line_px = _line_height(label_font)
    banner_bottom = margin + line_px * len(label_lines) + margin // 2
    draw.rectangle((0, 0, width - 1, banner_bottom), fill=banner)
    y = margin
    for line in label_lines:
        _draw_text(draw, (margin, y), line, label_font, (0, 0, 0))
        y += line_px

    y = banner_bottom + margin
    body_line_px = _line_height(body_font)
    header = f"prompt (seed {seed}, {width}x{height}):"
    _draw_text(draw, (margin, y), header, body_font, white)
    y += body_line_px * 2
    max_lines = max(1, (height - y - margin) // body_line_px)
    prompt_lines = textwrap.wrap(
        _printable(prompt)[:MAX_DRAWN_PROMPT_CHARS],
        width=_chars_per_line(body_font, width, margin),
        max_lines=max_lines,
        placeholder=" ...",
    )
    for line in prompt_lines:
        _draw_text(draw, (margin, y), line, body_font, white)
        y += body_line_px

    buffer = io.BytesIO()
    if image_format == "JPEG":
        image.save(buffer, "JPEG", quality=85)
    else:
        image.save(buffer, "PNG", compress_level=1)
    return buffer.getvalue()


def _line_height(font: ImageFont.FreeTypeFont | ImageFont.ImageFont) -> int:
    _left, top, _right, bottom = font.getbbox("Ag")
    return int(bottom - top) + 4


def _chars_per_line(
    font: ImageFont.FreeTypeFont | ImageFont.ImageFont, width: int, margin: int
) -> int:
    sample = "abcdefghijklmnopqrstuvwxyz "
    average_px = max(1.0, float(font.getlength(sample)) / len(sample))
    return max(4, int((width - 2 * margin) / average_px))


def fast_previews() -> dict[ImageFormat, bytes]:
    """The one small image per format that fast mode serves, whatever the prompt."""
    return {
        image_format: render_preview(
            "fast mode: the same image for every prompt",
            width=FAST_SIZE_PX,
            height=FAST_SIZE_PX,
            image_format=image_format,
        )
        for image_format in MIME_TYPES
    }

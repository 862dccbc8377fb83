"""The caption that travels with a delivered image, cut to the chat's limit.

Plain text, no parse mode: user and LLM text can never break formatting
(defect 7 of the original design). Telegram counts caption length in UTF-16
code units, so that is what is measured here.
"""

from __future__ import annotations

from dataclasses import dataclass

from sakaibot.commands import ImageOptions

#: Telegram's caption limit for ordinary accounts and bots.
CAPTION_LIMIT_UTF16 = 1024
_ELLIPSIS = "…"


def utf16_length(text: str) -> int:
    """Length as Telegram counts it: characters outside the BMP count twice."""
    return len(text.encode("utf-16-le")) // 2


def cut_to_utf16(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` UTF-16 units, with an ellipsis when cut.

    Never splits a surrogate pair; prefers to cut at a word boundary.
    """
    if utf16_length(text) <= limit:
        return text
    budget = limit - utf16_length(_ELLIPSIS)
    if budget <= 0:
        return ""
    kept: list[str] = []
    used = 0
    for char in text:
        width = 2 if ord(char) > 0xFFFF else 1
        if used + width > budget:
            break
        kept.append(char)
        used += width
    cut = "".join(kept)
    space = cut.rfind(" ")
    if space > len(cut) // 2:
        cut = cut[:space]
    return cut.rstrip() + _ELLIPSIS


@dataclass(frozen=True)
class CaptionFacts:
    """What a caption reports about one delivered image."""

    model_label: str
    prompt_source: str  # which enhancer wrote the prompt, or "original prompt"
    prompt_used: str
    options: ImageOptions
    elapsed_s: float
    seed: int | None = None


def build_caption(facts: CaptionFacts, *, limit: int = CAPTION_LIMIT_UTF16) -> str:
    """Model, prompt source, options and time on top; the prompt used fills the rest."""
    details = [facts.model_label, f"prompt: {facts.prompt_source}", f"{facts.elapsed_s:.1f} s"]
    options = facts.options
    extras: list[str] = []
    if facts.seed is not None:
        extras.append(f"seed {facts.seed}")
    if options.aspect_ratio:
        extras.append(options.aspect_ratio)
    if options.steps is not None:
        extras.append(f"{options.steps} steps")
    if options.style is not None:
        extras.append(f"style {options.style.value}")
    if options.negative_prompt:
        extras.append(f"without: {options.negative_prompt}")
    header = "🎨 " + " · ".join(details)
    if extras:
        header += "\n" + " · ".join(extras)
    header = cut_to_utf16(header, limit // 2)
    room = limit - utf16_length(header) - 2
    if room <= 0:
        return cut_to_utf16(header, limit)
    return f"{header}\n\n{cut_to_utf16(facts.prompt_used, room)}"

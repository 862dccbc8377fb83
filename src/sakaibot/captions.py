"""The caption that travels with a delivered image, cut to the chat's limit.

A caption is visible text plus the spans shown in bold. It is cut on the
visible text, then rendered as plain text (the console) or as escaped HTML
(Telegram), so user and LLM text can never break formatting (defect 7 of the
original design). Telegram counts caption length in UTF-16 code units after
entity parsing, which is the visible text measured here.
"""

from __future__ import annotations

import html
from dataclasses import dataclass

from sakaibot.commands import ImageOptions
from sakaibot.enhancer import ORIGINAL_PROMPT
from sakaibot.i18n import ENGLISH, Texts, isolate

#: Telegram's caption limit for ordinary accounts and bots.
CAPTION_LIMIT_UTF16 = 1024
_ELLIPSIS = "…"
_RLM = "\u200f"


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


def job_tag(job_id: str) -> str:
    """How a caption names its job (``#ab12cd``), searchable in the chat."""
    return f"#{job_id}"


@dataclass(frozen=True)
class CaptionPart:
    text: str
    bold: bool = False


@dataclass(frozen=True)
class Caption:
    """The visible caption text, with the spans a rich front end shows in bold.

    Cutting happens on the visible text before rendering, so an HTML rendering
    is never cut inside a tag or an ``&...;`` entity.
    """

    parts: tuple[CaptionPart, ...]

    def plain(self) -> str:
        return "".join(part.text for part in self.parts)

    def html(self) -> str:
        """Telegram HTML: user and LLM text escaped, never trusted as markup."""
        rendered: list[str] = []
        for part in self.parts:
            text = html.escape(part.text, quote=False)
            rendered.append(f"<b>{text}</b>" if part.bold else text)
        return "".join(rendered)

    def __str__(self) -> str:
        return self.plain()


@dataclass(frozen=True)
class CaptionFacts:
    """What a caption reports about one delivered image."""

    model_label: str
    prompt_source: str  # which enhancer wrote the prompt, or "original prompt"
    prompt_used: str
    options: ImageOptions
    elapsed_s: float
    seed: int | None = None
    #: ``--steps`` as asked, when it was above the model's maximum and lowered.
    steps_requested: int | None = None
    #: The job's id, for /image resend, /image again and finding it after a restart.
    job_id: str | None = None
    #: The image is a stored result for the same request, not a new one.
    from_cache: bool = False
    #: An album's images in order, one short text each ("1: seed 42 #ab12cd").
    variants: tuple[str, ...] = ()


#: Room for the lines above the prompt; the prompt fills what is left.
_HEADER_MAX_UTF16 = 300
#: More room above the prompt for an album's line of seeds (up to ten images).
_VARIANTS_MAX_UTF16 = 400


def build_caption(
    facts: CaptionFacts, *, limit: int = CAPTION_LIMIT_UTF16, texts: Texts = ENGLISH
) -> Caption:
    """Model, prompt source, options and time on top; the prompt used fills the rest.

    In a right-to-left language the Latin runs (model, seed, ratio, tag) are
    isolated, so the header reads right to left; the prompt is its own paragraph.
    """
    options = facts.options
    extras: list[str] = []
    if facts.seed is not None:
        extras.append(texts.gettext("seed {seed}", seed=str(facts.seed)))
    if options.aspect_ratio:
        extras.append(
            isolate(options.aspect_ratio) if texts.right_to_left else options.aspect_ratio
        )
    if options.steps is not None:
        if facts.steps_requested is not None:
            extras.append(
                texts.gettext(
                    "{steps} steps (the maximum; {asked} asked)",
                    steps=options.steps,
                    asked=facts.steps_requested,
                )
            )
        else:
            extras.append(texts.gettext("{steps} steps", steps=options.steps))
    if options.style is not None:
        extras.append(texts.gettext("style {style}", style=options.style.value))
    if options.negative_prompt:
        extras.append(texts.gettext("without: {negative}", negative=options.negative_prompt))
    source = facts.prompt_source
    if source == ORIGINAL_PROMPT:
        source = texts.gettext("original prompt")
    details = texts.gettext(
        " · prompt: {source} · {elapsed_s:.1f} s", source=source, elapsed_s=facts.elapsed_s
    )
    if facts.from_cache:
        details += texts.gettext(" · from cache")
    if facts.job_id:
        tag = job_tag(facts.job_id)
        details += f" · {isolate(tag) if texts.right_to_left else tag}"
    if extras:
        details += "\n" + " · ".join(extras)
    if facts.variants:
        details += "\n" + " · ".join(facts.variants)
    header_budget = min(_HEADER_MAX_UTF16 + _VARIANTS_MAX_UTF16 * bool(facts.variants), limit)
    label = cut_to_utf16(facts.model_label, max(min(_HEADER_MAX_UTF16, limit) // 4, 0))
    if texts.right_to_left:
        # A right-to-left mark first: the line starts with a Latin model name.
        head = [CaptionPart(_RLM + "🎨 "), CaptionPart(isolate(label), bold=True)]
    else:
        head = [CaptionPart("🎨 "), CaptionPart(label, bold=True)]
    used = sum(utf16_length(part.text) for part in head)
    head.append(CaptionPart(cut_to_utf16(details, max(header_budget - used, 0))))
    used = sum(utf16_length(part.text) for part in head)
    room = limit - used - 2
    if room <= 0:
        return Caption(tuple(head))
    return Caption((*head, CaptionPart("\n\n"), CaptionPart(cut_to_utf16(facts.prompt_used, room))))

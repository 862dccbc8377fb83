"""Captions: what is reported, and the limit counted as Telegram counts it."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from sakaibot.captions import CaptionFacts, build_caption, cut_to_utf16, utf16_length
from sakaibot.commands import ImageOptions, Style


def facts(prompt: str, **options: object) -> CaptionFacts:
    return CaptionFacts(
        model_label="Flux",
        prompt_source="OpenRouter (gpt)",
        prompt_used=prompt,
        options=ImageOptions(**options),  # type: ignore[arg-type]
        elapsed_s=12.34,
        seed=options.get("seed"),  # type: ignore[arg-type]
    )


def test_caption_reports_model_source_time_options_and_prompt() -> None:
    caption = build_caption(facts("a red fox", seed=42, aspect_ratio="16:9", style=Style.ANIME))
    assert caption == (
        "🎨 Flux · prompt: OpenRouter (gpt) · 12.3 s\nseed 42 · 16:9 · style anime\n\na red fox"
    )


def test_utf16_counts_astral_characters_twice() -> None:
    assert utf16_length("abc") == 3
    assert utf16_length("🦊") == 2
    assert utf16_length("سلام") == 4


def test_cut_never_splits_an_emoji_and_marks_the_cut() -> None:
    text = "🦊" * 600
    cut = cut_to_utf16(text, 1024)
    assert utf16_length(cut) <= 1024
    assert cut.endswith("…")
    assert "\ud83e" not in cut  # no lone surrogate


def test_long_prompt_is_cut_to_the_limit() -> None:
    caption = build_caption(facts("word " * 1000))
    assert utf16_length(caption) <= 1024
    assert caption.endswith("…")


@settings(max_examples=200, deadline=None)
@given(st.text(), st.integers(min_value=20, max_value=4096))
def test_never_over_the_limit(prompt: str, limit: int) -> None:
    assert utf16_length(build_caption(facts(prompt), limit=limit)) <= limit

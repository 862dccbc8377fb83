"""Cleaning rules for LLM answers: one test per rule, and properties that always hold."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sakaibot.enhancer.cleaning import (
    MIN_ENHANCED_CHARS,
    SYSTEM_PROMPT,
    clean_llm_output,
    cut_at_word_boundary,
)

FOX = "A lone red fox in fresh snow at dawn"


def clean(text: str, max_chars: int = 1000) -> str:
    return clean_llm_output(text, max_chars=max_chars)


def test_the_system_prompt_asks_for_a_bare_prompt() -> None:
    lowered = SYSTEM_PROMPT.lower()
    assert "50 to 150 words" in lowered
    assert "only the prompt" in lowered
    for unwanted in ("preamble", "quotes", "markdown"):
        assert unwanted in lowered
    assert MIN_ENHANCED_CHARS == 10


def test_plain_text_is_unchanged() -> None:
    assert clean(FOX) == FOX


@pytest.mark.parametrize(
    "text",
    [
        f"```\n{FOX}\n```",
        f"```text\n{FOX}\n```",
        f"```plaintext\n{FOX}\n```\n",
        f"  ```  \n{FOX}\n  ```",
        f"```{FOX}```",
        f"~~~\n{FOX}\n~~~",
    ],
)
def test_code_fences_are_removed(text: str) -> None:
    assert clean(text) == FOX


@pytest.mark.parametrize(
    "preamble",
    [
        "Here is an enhanced prompt:",
        "Here's the improved prompt:",
        "Here’s your prompt:",
        "here is the prompt:",
        "HERE IS AN ENHANCED PROMPT:",
        "Here's an enhanced, detailed image-generation prompt for you:",
        "Here is a vivid prompt for your image.\n",
        "Sure!",
        "Sure! Here's an enhanced prompt:",
        "Certainly. Here is the improved prompt:",
        "Of course! Here is your prompt:",
        "Prompt:",
        "prompt :",
        "Enhanced prompt:",
        "Improved Prompt:",
        "Image generation prompt:",
        "**Enhanced Prompt:**",
        "# Enhanced Prompt\n",
        "Sure!\n\nHere is the prompt:\n\nPrompt:",
    ],
)
def test_preambles_are_removed(preamble: str) -> None:
    assert clean(f"{preamble} {FOX}") == FOX
    assert clean(f"{preamble}\n{FOX}") == FOX


@pytest.mark.parametrize(
    "text",
    [
        "Absolutely stunning sunset over a calm sea",  # no punctuation: not an acknowledgement
        "Okapi grazing in a misty rainforest",
        "Surely the brightest star over the desert",
        "Prompt engineering poster in Bauhaus style",
        "Herefordshire cattle in a green meadow",
    ],
)
def test_prompts_that_only_look_like_preambles_are_kept(text: str) -> None:
    assert clean(text) == text


def test_only_the_first_line_is_checked_for_a_preamble() -> None:
    text = "A poster that reads\nPrompt: be kind"

    assert clean(text) == "A poster that reads Prompt: be kind"


def test_a_preamble_alone_is_not_stripped_to_nothing() -> None:
    # Too short anyway; the caller treats it as a failure.
    assert clean("Prompt:") == "Prompt:"


@pytest.mark.parametrize(
    "text",
    [
        f'"{FOX}"',
        f"'{FOX}'",
        f"“{FOX}”",
        f"«{FOX}»",
        f"「{FOX}」",
        f'  "{FOX}"  ',
        f"\"'{FOX}'\"",
        f'Prompt: "{FOX}"',
    ],
)
def test_wrapping_quotes_are_removed(text: str) -> None:
    assert clean(text) == FOX


def test_inner_quotes_are_kept() -> None:
    text = '"Hello" says the fox, "goodbye"'

    assert clean(text) == text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("A **lone** red fox", "A lone red fox"),
        ("A __lone__ red fox", "A lone red fox"),
        ("A *lone* red fox", "A lone red fox"),
        ("# A lone red fox", "A lone red fox"),
        ("### A lone red fox", "A lone red fox"),
        ("- A lone red fox\n- in fresh snow", "A lone red fox in fresh snow"),
        ("* A lone red fox\n* in fresh snow", "A lone red fox in fresh snow"),
        ("1. A lone red fox\n2. in fresh snow", "A lone red fox in fresh snow"),
        ("A fox, 3*4 feet, in snow", "A fox, 3*4 feet, in snow"),
        ("A well-lit fox - in snow", "A well-lit fox - in snow"),
    ],
)
def test_markdown_markers_are_removed(text: str, expected: str) -> None:
    assert clean(text) == expected


def test_whitespace_is_collapsed() -> None:
    assert clean("  A lone\n\n red\tfox \r\n in  snow  ") == "A lone red fox in snow"


def test_control_characters_are_removed() -> None:
    assert clean("A lone\x00 red\x1b fox\x7f in\x85 snow\x07") == "A lone red fox in snow"


def test_persian_joiners_and_emoji_sequences_are_kept() -> None:
    text = "گربه‌ی نارنجی روی پشت‌بام 👨‍👩‍👧"

    assert clean(text) == text


def test_a_long_answer_is_cut_at_a_word_boundary() -> None:
    text = "alpha beta gamma delta"

    assert clean(text, max_chars=13) == "alpha beta"
    assert clean(text, max_chars=16) == "alpha beta gamma"  # the space right after counts
    assert clean(text, max_chars=15) == "alpha beta"


def test_the_cut_does_not_leave_dangling_punctuation() -> None:
    assert clean("a red fox, in snow", max_chars=12) == "a red fox"


def test_a_single_long_word_is_cut_hard() -> None:
    assert clean("Supercalifragilistic fox", max_chars=5) == "Super"


def test_cut_at_word_boundary_leaves_short_text_alone() -> None:
    assert cut_at_word_boundary("a fox", 5) == "a fox"


def test_max_chars_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_chars"):
        clean_llm_output("a fox", max_chars=0)


def test_a_realistic_answer() -> None:
    answer = (
        "Sure! Here's an enhanced prompt for your image:\n\n"
        "```\n"
        '"**A lone red fox** standing in fresh powder snow at dawn,\n'
        'soft golden light, frosted pines behind"\n'
        "```\n"
    )

    assert clean(answer) == (
        "A lone red fox standing in fresh powder snow at dawn, "
        "soft golden light, frosted pines behind"
    )


@given(text=st.text(), max_chars=st.integers(min_value=1, max_value=300))
def test_the_output_fits_and_has_no_control_characters(text: str, max_chars: int) -> None:
    cleaned = clean_llm_output(text, max_chars=max_chars)

    assert len(cleaned) <= max_chars
    assert not any(unicodedata.category(ch) in ("Cc", "Cs") for ch in cleaned)
    assert cleaned == cleaned.strip()
    assert "  " not in cleaned


@given(
    words=st.lists(
        st.text(alphabet="abcdefghijklmnopqrstuvwxyz", min_size=1, max_size=12),
        min_size=1,
        max_size=40,
    ),
    max_chars=st.integers(min_value=12, max_value=200),
)
def test_a_cut_never_splits_a_word(words: list[str], max_chars: int) -> None:
    cleaned = clean_llm_output(" ".join(words), max_chars=max_chars)

    assert cleaned.split() == words[: len(cleaned.split())]

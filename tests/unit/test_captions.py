"""Captions: what is reported, the limit counted as Telegram counts it, safe HTML."""

from __future__ import annotations

from html.parser import HTMLParser

from hypothesis import given, settings
from hypothesis import strategies as st

from sakaibot.captions import CaptionFacts, build_caption, cut_to_utf16, utf16_length
from sakaibot.commands import ImageOptions, Style


def facts(prompt: str, *, source: str = "OpenRouter (gpt)", **options: object) -> CaptionFacts:
    return CaptionFacts(
        model_label="Flux",
        prompt_source=source,
        prompt_used=prompt,
        options=ImageOptions(**options),  # type: ignore[arg-type]
        elapsed_s=12.34,
        seed=options.get("seed"),  # type: ignore[arg-type]
    )


class _Visible(HTMLParser):
    """What Telegram shows of an HTML caption: the text, with entities decoded."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.text: list[str] = []
        self.tags: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def visible(markup: str) -> tuple[str, list[str]]:
    parser = _Visible()
    parser.feed(markup)
    parser.close()
    return "".join(parser.text), parser.tags


def test_caption_reports_model_source_time_options_and_prompt() -> None:
    caption = build_caption(facts("a red fox", seed=42, aspect_ratio="16:9", style=Style.ANIME))
    assert caption.plain() == (
        "🎨 Flux · prompt: OpenRouter (gpt) · 12.3 s\nseed 42 · 16:9 · style anime\n\na red fox"
    )
    assert caption.html().startswith("🎨 <b>Flux</b> · prompt:")


def test_html_escapes_user_and_llm_text() -> None:
    caption = build_caption(facts("<b>bold</b> & <script>", source="LLM <x> & co"))
    markup = caption.html()
    assert "&lt;b&gt;bold&lt;/b&gt; &amp; &lt;script&gt;" in markup
    assert "LLM &lt;x&gt; &amp; co" in markup
    text, tags = visible(markup)
    assert tags == ["b"]  # only our own bold model name
    assert text == caption.plain()


def test_persian_and_emoji_survive() -> None:
    prompt = "روباه قرمز در برف 🦊❄️ 👩‍👩‍👧"
    caption = build_caption(facts(prompt))
    assert caption.plain().endswith(prompt)
    assert visible(caption.html())[0].endswith(prompt)


def test_utf16_counts_astral_characters_twice() -> None:
    assert utf16_length("abc") == 3
    assert utf16_length("🦊") == 2
    assert utf16_length("سلام") == 4


def test_cut_never_splits_an_emoji_and_marks_the_cut() -> None:
    cut = cut_to_utf16("🦊" * 600, 1024)
    assert utf16_length(cut) <= 1024
    assert cut.endswith("…")
    assert "\ud83e" not in cut  # no lone surrogate


def test_long_prompt_is_cut_to_the_limit_outside_any_entity() -> None:
    caption = build_caption(facts("fish & chips < 5 " * 200))
    assert utf16_length(caption.plain()) <= 1024
    assert caption.plain().endswith("…")
    markup = caption.html()
    assert visible(markup)[0] == caption.plain()
    assert markup.count("&") == markup.count("&amp;") + markup.count("&lt;")


@settings(max_examples=200, deadline=None)
@given(st.text(), st.text(max_size=80), st.integers(min_value=20, max_value=4096))
def test_never_over_the_limit_and_always_valid_html(prompt: str, source: str, limit: int) -> None:
    caption = build_caption(facts(prompt, source=source), limit=limit)
    assert utf16_length(caption.plain()) <= limit
    text, tags = visible(caption.html())
    assert tags in (["b"], [])
    assert text == caption.plain()

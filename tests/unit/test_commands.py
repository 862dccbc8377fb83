"""The ``/image`` grammar: what is accepted, what is refused and what users are told."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sakaibot import models
from sakaibot.commands import (
    AgainCommand,
    CacheCommand,
    CancelCommand,
    DefaultsCommand,
    HelpCommand,
    HistoryCommand,
    ImageOptions,
    ImageRequest,
    ModelsCommand,
    ResendCommand,
    RetryCommand,
    StatsCommand,
    StatusCommand,
    Style,
    WhoamiCommand,
    is_generation_command,
    is_image_command,
    parse_command,
    usage_text,
    with_defaults,
)
from sakaibot.errors import (
    BadFlag,
    EmptyPrompt,
    PromptTooLong,
    RequestRejected,
    UnknownModel,
    UnsupportedFlag,
    UsageError,
)
from sakaibot.models import ASPECT_RATIOS, Contract, ModelRegistry, ModelSpec

MAX = 1000
ZWJ = "\u200d"
ZWNJ = "\u200c"

FLUX = ModelSpec(
    name="flux",
    contract=Contract.GET,
    url="https://flux.example.workers.dev",
    options=frozenset({"seed", "steps"}),
    max_steps=8,
)
SDXL = ModelSpec(
    name="sdxl",
    contract=Contract.POST,
    url="https://sdxl.example.workers.dev",
    options=frozenset({"ar", "seed", "neg", "steps"}),
    max_steps=20,
)
REGISTRY = ModelRegistry([FLUX, SDXL])
EMPTY = ModelRegistry([])


def parse(text: str, registry: ModelRegistry = REGISTRY, max_chars: int = MAX) -> object:
    return parse_command(text, registry, max_prompt_chars=max_chars)


def request(text: str, max_chars: int = MAX) -> ImageRequest:
    result = parse(text, max_chars=max_chars)
    assert isinstance(result, ImageRequest)
    return result


def is_removed_char(ch: str) -> bool:
    """Control and invisible format characters, except the joiners scripts need."""
    return ch not in (ZWJ, ZWNJ) and unicodedata.category(ch) in ("Cc", "Cf", "Cs")


# -- the basic command -------------------------------------------------------------


def test_basic_generation_command() -> None:
    assert parse("/image=flux=a red fox in the snow") == ImageRequest(
        model="flux", prompt="a red fox in the snow", options=ImageOptions()
    )


@pytest.mark.parametrize("text", ["/image=FLUX=cat", "/image=Flux=cat", "/IMAGE=fLuX=cat"])
def test_model_and_command_word_are_case_insensitive(text: str) -> None:
    assert request(text) == ImageRequest(model="flux", prompt="cat")


def test_leading_whitespace_and_space_around_the_model_are_ignored() -> None:
    assert request("  \n /image= sdxl =a cat") == ImageRequest(model="sdxl", prompt="a cat")


def test_bot_suffix_is_accepted() -> None:
    assert request("/image@SakaiBot=flux=cat") == ImageRequest(model="flux", prompt="cat")
    assert parse("/image@SakaiBot help") == HelpCommand()
    assert parse("/image@SakaiBot") == HelpCommand()


def test_prompt_is_split_on_the_first_equals_only() -> None:
    assert request("/image=flux=E=mc^2 on a blackboard, a==b").prompt == (
        "E=mc^2 on a blackboard, a==b"
    )


def test_emoji_sequences_survive() -> None:
    family = f"👩{ZWJ}👩{ZWJ}👧"
    fire_heart = f"❤️{ZWJ}🔥"
    result = request(f"/image=flux=a {family} with {fire_heart} and 🦊🇯🇵")
    assert result.prompt == f"a {family} with {fire_heart} and 🦊🇯🇵"


def test_persian_text_keeps_its_zero_width_non_joiner() -> None:
    prompt = f"گربه{ZWNJ}های سیاه در برف"
    assert request(f"/image=sdxl={prompt}").prompt == prompt


def test_control_and_invisible_characters_are_removed() -> None:
    text = "/image=flux=a\x00 red\u200b fox\u202e\x07 in\tthe\r\n\n  snow\ufeff\x1b "
    assert request(text).prompt == "a red fox in the snow"


def test_prompt_of_exactly_the_limit_is_accepted() -> None:
    prompt = "x" * 50
    assert request(f"/image=flux={prompt}", max_chars=50).prompt == prompt


def test_prompt_over_the_limit_is_refused_with_the_numbers() -> None:
    with pytest.raises(PromptTooLong) as caught:
        parse("/image=flux=" + "x" * 51, max_chars=50)
    message = caught.value.user_message
    assert "51 characters" in message
    assert "limit is 50" in message
    assert "by 1 character" in message


def test_limit_counts_the_prompt_after_sanitising_and_without_flags() -> None:
    prompt = "y" * 50
    text = f"/image=flux=\x00\x00{prompt}\u200b   --seed 7 --raw"
    result = request(text, max_chars=50)
    assert result.prompt == prompt
    assert result.options.seed == 7


def test_default_limit_boundaries_of_the_original_design() -> None:
    assert len(request("/image=flux=" + "z" * 1000).prompt) == 1000
    with pytest.raises(PromptTooLong, match="1001"):
        parse("/image=flux=" + "z" * 1001)


# -- models and prompts refused --------------------------------------------------


def test_unknown_model_names_the_available_models() -> None:
    with pytest.raises(UnknownModel) as caught:
        parse("/image=dalle=a cat")
    message = caught.value.user_message
    assert "'dalle'" in message
    assert "flux, sdxl" in message
    assert "/image=flux=" in message


def test_unknown_model_without_prompt_is_still_unknown_model() -> None:
    with pytest.raises(UnknownModel, match="midjourney"):
        parse("/image=midjourney")


def test_unknown_model_with_no_models_configured_tells_the_owner_what_to_set() -> None:
    with pytest.raises(UnknownModel) as caught:
        parse("/image=flux=a cat", registry=EMPTY)
    assert "FLUX_WORKER_URL" in caught.value.user_message


def test_a_very_long_unknown_model_is_shortened_in_the_message() -> None:
    with pytest.raises(UnknownModel) as caught:
        parse("/image=" + "m" * 5000)
    assert len(caught.value.user_message) < 200


@pytest.mark.parametrize(
    "text",
    ["/image=flux", "/image=flux=", "/image=flux=   ", "/image=flux=\x00\u200b\n", "/image=sdxl= "],
)
def test_empty_prompt(text: str) -> None:
    with pytest.raises(EmptyPrompt) as caught:
        parse(text)
    assert "The prompt is empty" in caught.value.user_message
    assert "/image=" in caught.value.user_message


def test_prompt_of_only_flags_is_empty() -> None:
    with pytest.raises(EmptyPrompt):
        parse("/image=sdxl=--seed 42 --ar 1:1")


@pytest.mark.parametrize("text", ["/image=", "/image==a cat", "/image= =x", "/image=\x00=x"])
def test_missing_model_shows_the_usage(text: str) -> None:
    with pytest.raises(UsageError) as caught:
        parse(text)
    assert caught.value.user_message == usage_text(REGISTRY)


# -- flags -------------------------------------------------------------------------


def test_every_flag_together() -> None:
    result = request(
        "/image=sdxl=a lighthouse at dusk --ar 16:9 --seed 42 --neg blurry, low quality "
        "--steps 12 --style photographic --raw --file --fresh"
    )
    assert result == ImageRequest(
        model="sdxl",
        prompt="a lighthouse at dusk",
        options=ImageOptions(
            aspect_ratio="16:9",
            seed=42,
            negative_prompt="blurry, low quality",
            steps=12,
            style=Style.PHOTOGRAPHIC,
            raw=True,
            as_file=True,
            fresh=True,
        ),
        steps_requested=None,
    )


@pytest.mark.parametrize("ratio", list(ASPECT_RATIOS))
def test_every_aspect_ratio(ratio: str) -> None:
    assert request(f"/image=sdxl=cat --ar {ratio}").options.aspect_ratio == ratio


@pytest.mark.parametrize("style", list(Style))
def test_every_style_case_insensitively(style: Style) -> None:
    assert request(f"/image=flux=cat --style {style.value.upper()}").options.style is style


def test_flag_names_are_case_insensitive() -> None:
    options = request("/image=sdxl=cat --AR 1:1 --Seed 0 --NEG dogs --RAW --File").options
    assert options == ImageOptions(
        aspect_ratio="1:1", seed=0, negative_prompt="dogs", raw=True, as_file=True
    )


@pytest.mark.parametrize("model", ["flux", "sdxl"])
def test_fresh_is_accepted_for_every_model(model: str) -> None:
    result = request(f"/image={model}=a red fox --FRESH")
    assert result == ImageRequest(model=model, prompt="a red fox", options=ImageOptions(fresh=True))


def test_fresh_is_off_unless_given() -> None:
    assert request("/image=flux=cat --raw").options.fresh is False
    assert ImageOptions().fresh is False


def test_fresh_combines_with_other_flags_in_any_order() -> None:
    flux = request("/image=flux=cat --fresh --seed 7 --file").options
    assert flux == ImageOptions(seed=7, as_file=True, fresh=True)
    sdxl = request("/image=sdxl=cat --ar 1:1 \u2014fresh --neg dogs").options
    assert sdxl == ImageOptions(aspect_ratio="1:1", negative_prompt="dogs", fresh=True)


def test_fresh_is_accepted_whether_or_not_the_registry_lists_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(models, "UNIVERSAL_FLAGS", (*models.UNIVERSAL_FLAGS, "fresh"))
    assert request("/image=flux=cat --fresh").options.fresh is True
    text = usage_text(REGISTRY)
    assert "flux takes --seed, --steps, --style, --raw, --file, --fresh, --n (" in text
    assert text.count("--fresh") == 3  # the flag line and one per model


def test_fresh_without_dashes_is_prompt_text() -> None:
    assert request("/image=flux=a fresh loaf of bread").prompt == "a fresh loaf of bread"


def test_seed_range_boundaries() -> None:
    assert request("/image=flux=cat --seed 0").options.seed == 0
    assert request("/image=flux=cat --seed 4294967295").options.seed == 4294967295


def test_steps_within_the_maximum_are_kept() -> None:
    result = request("/image=flux=cat --steps 8")
    assert result.options.steps == 8
    assert result.steps_requested is None


def test_steps_above_the_maximum_are_clamped_and_remembered() -> None:
    result = request("/image=flux=cat --steps 50")
    assert result.options.steps == 8
    assert result.steps_requested == 50
    sdxl = request("/image=sdxl=cat --steps 50")
    assert (sdxl.options.steps, sdxl.steps_requested) == (20, 50)


def test_negative_prompt_runs_to_the_next_flag_and_is_sanitised() -> None:
    result = request("/image=sdxl=cat --neg  dogs,\x00 text\u200b,\n watermark --seed 3")
    assert result.options.negative_prompt == "dogs, text, watermark"
    assert result.options.seed == 3


def test_negative_prompt_may_contain_unknown_dashes() -> None:
    result = request("/image=sdxl=cat --neg --foo bar")
    assert result.options.negative_prompt == "--foo bar"


def test_phone_dashes_are_read_as_flags() -> None:
    options = request("/image=sdxl=cat \u2014ar 3:2 \u2013seed 5").options
    assert (options.aspect_ratio, options.seed) == ("3:2", 5)


def test_unknown_double_dash_before_the_flags_stays_in_the_prompt() -> None:
    result = request("/image=flux=a sign saying --foo and -- more --seed 1")
    assert result.prompt == "a sign saying --foo and -- more"
    assert result.options.seed == 1


def test_flag_name_without_dashes_is_prompt_text() -> None:
    assert request("/image=flux=raw seed steps 42").prompt == "raw seed steps 42"


@pytest.mark.parametrize(
    ("text", "flag", "shown"),
    [
        ("/image=sdxl=cat --ar 5:4", "--ar", ["'5:4'", "16:9", "9:16", "e.g. --ar 16:9"]),
        ("/image=sdxl=cat --ar wide", "--ar", ["'wide'", "1:1"]),
        ("/image=flux=cat --seed abc", "--seed", ["'abc'", "0 to 4294967295", "--seed 42"]),
        ("/image=flux=cat --seed -1", "--seed", ["'-1'", "0 to 4294967295"]),
        ("/image=flux=cat --seed 4294967296", "--seed", ["'4294967296'", "0 to 4294967295"]),
        ("/image=flux=cat --seed 1.5", "--seed", ["'1.5'", "whole number"]),
        ("/image=flux=cat --seed " + "9" * 5000, "--seed", ["whole number"]),
        ("/image=flux=cat --steps 0", "--steps", ["'0'", "1 or more", "at most 8"]),
        ("/image=flux=cat --steps many", "--steps", ["'many'", "e.g. --steps 8"]),
        ("/image=flux=cat --steps -3", "--steps", ["'-3'", "whole number"]),
        ("/image=flux=cat --style cubist", "--style", ["'cubist'", "realistic", "anime"]),
    ],
)
def test_bad_flag_values_name_the_flag_value_and_valid_values(
    text: str, flag: str, shown: list[str]
) -> None:
    with pytest.raises(BadFlag) as caught:
        parse(text)
    assert caught.value.flag == flag
    message = caught.value.user_message
    assert message.startswith(f"Problem with {flag}:")
    for fragment in shown:
        assert fragment in message
    assert len(message) < 400


@pytest.mark.parametrize(
    ("text", "flag"),
    [
        ("/image=sdxl=cat --ar", "--ar"),
        ("/image=flux=cat --seed", "--seed"),
        ("/image=flux=cat --steps", "--steps"),
        ("/image=flux=cat --style", "--style"),
        ("/image=sdxl=cat --neg", "--neg"),
        ("/image=flux=cat --seed --raw", "--seed"),
        ("/image=sdxl=cat --neg --seed 4", "--neg"),
    ],
)
def test_missing_flag_value(text: str, flag: str) -> None:
    with pytest.raises(BadFlag) as caught:
        parse(text)
    assert caught.value.flag == flag
    assert "missing" in caught.value.user_message
    assert "e.g." in caught.value.user_message


def test_negative_prompt_over_the_limit() -> None:
    with pytest.raises(BadFlag) as caught:
        parse("/image=sdxl=cat --neg " + "n" * 51, max_chars=50)
    assert "51 characters" in caught.value.user_message
    assert "limit is 50" in caught.value.user_message


def test_unsupported_flag_names_the_supported_flags() -> None:
    with pytest.raises(UnsupportedFlag) as caught:
        parse("/image=flux=cat --ar 16:9")
    message = caught.value.user_message
    assert "flux does not support --ar" in message
    assert "--seed, --steps, --style, --raw, --file, --fresh" in message


@pytest.mark.parametrize("text", ["/image=flux=cat --neg dogs", "/image=flux=cat --NEG"])
def test_unsupported_negative_prompt(text: str) -> None:
    with pytest.raises(UnsupportedFlag, match="--neg"):
        parse(text)


def test_support_is_checked_before_the_value() -> None:
    # An unsupported flag with a bad value (or none) is reported as unsupported.
    with pytest.raises(UnsupportedFlag):
        parse("/image=flux=cat --ar 5:4")
    with pytest.raises(UnsupportedFlag):
        parse("/image=flux=cat --ar")


def test_flags_are_read_left_to_right_and_the_first_problem_wins() -> None:
    with pytest.raises(BadFlag, match="--seed"):
        parse("/image=flux=cat --seed x --ar 16:9")
    with pytest.raises(UnsupportedFlag):
        parse("/image=flux=cat --ar 16:9 --seed x")


def test_prompt_problems_come_before_flag_problems() -> None:
    with pytest.raises(EmptyPrompt):
        parse("/image=flux= --seed x")


@pytest.mark.parametrize(
    ("text", "flag"),
    [
        ("/image=flux=cat --seed 1 --seed 2", "--seed"),
        ("/image=flux=cat --raw --RAW", "--raw"),
        ("/image=sdxl=cat --fresh --seed 1 --Fresh", "--fresh"),
        ("/image=sdxl=cat --neg a --ar 1:1 --neg b", "--neg"),
    ],
)
def test_repeated_flag(text: str, flag: str) -> None:
    with pytest.raises(BadFlag) as caught:
        parse(text)
    assert caught.value.flag == flag
    assert "given twice" in caught.value.user_message


def test_text_after_the_flags_says_flags_go_at_the_end() -> None:
    with pytest.raises(BadFlag) as caught:
        parse("/image=flux=a red fox --seed 42 in the snow")
    message = caught.value.user_message
    assert "'in the snow'" in message
    assert "Flags go at the end" in message
    assert "/image=flux=a red fox in the snow --seed 42" in message


def test_extra_value_after_fresh() -> None:
    with pytest.raises(BadFlag) as caught:
        parse("/image=sdxl=cat --fresh please")
    assert caught.value.flag == "--fresh"
    message = caught.value.user_message
    assert "'please'" in message
    assert "/image=sdxl=a red fox in the snow --fresh" in message


def test_extra_value_after_a_bare_flag() -> None:
    with pytest.raises(BadFlag) as caught:
        parse("/image=flux=cat --raw please --file")
    assert caught.value.flag == "--raw"
    assert "'please'" in caught.value.user_message
    assert "Flags go at the end" in caught.value.user_message


def test_unknown_flag_inside_the_flags_is_named() -> None:
    with pytest.raises(BadFlag) as caught:
        parse("/image=flux=cat --seed 1 --size big")
    assert caught.value.flag == "--size"
    message = caught.value.user_message
    assert "'--size' is not a flag" in message
    assert "--seed, --steps" in message


# -- subcommands ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("/image", HelpCommand()),
        ("  /image  ", HelpCommand()),
        ("/image help", HelpCommand()),
        ("/IMAGE HELP", HelpCommand()),
        ("/image models", ModelsCommand()),
        ("/image\nModels", ModelsCommand()),
        ("/image status", StatusCommand()),
        ("/image cancel", CancelCommand(None)),
        ("/image cancel AB12", CancelCommand("ab12")),
        ("/image cancel #Ab12 ", CancelCommand("ab12")),
        ("/image Cancel  7", CancelCommand("7")),
        ("/image retry #AB12", RetryCommand("ab12")),
        ("/image history", HistoryCommand(10)),
        ("/image HISTORY  25", HistoryCommand(25)),
        ("/image history 007", HistoryCommand(7)),
        ("/image again AB12", AgainCommand("ab12")),
        ("/image Again #xY9", AgainCommand("xy9")),
        ("/image resend ab12", ResendCommand("ab12")),
        ("/image RESEND #Ab12 ", ResendCommand("ab12")),
        # Without an id: the image the command replies to.
        ("/image again", AgainCommand(None)),
        ("/image resend", ResendCommand(None)),
        ("/image file", ResendCommand(None, as_file=True)),
        ("/image File #AB12", ResendCommand("ab12", as_file=True)),
        ("/image set", DefaultsCommand()),
        ("/image set reset", DefaultsCommand(reset=True)),
        ("/image set AR 16:9", DefaultsCommand("ar", "16:9")),
        ("/image set --style Artistic", DefaultsCommand("style", "artistic")),
        ("/image set raw on", DefaultsCommand("raw", "on")),
        ("/image set file ON", DefaultsCommand("file", "on")),
        ("/image set raw off", DefaultsCommand("raw", None)),
        ("/image set ar off", DefaultsCommand("ar", None)),
        ("/image set neg blurry  watermark", DefaultsCommand("neg", "blurry watermark")),
        ("/image set steps 4", DefaultsCommand("steps", "4")),
        ("/image stats", StatsCommand(7)),
        ("/image Stats 30", StatsCommand(30)),
        ("/image cache", CacheCommand(clear=False)),
        ("/image cache clear", CacheCommand(clear=True)),
        ("/image CACHE Clear", CacheCommand(clear=True)),
        ("/image whoami", WhoamiCommand()),
        ("/image WhoAmI", WhoamiCommand()),
        ("/image@SakaiBot history 3", HistoryCommand(3)),
    ],
)
def test_subcommands(text: str, expected: object) -> None:
    assert parse(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "/image foo",
        "/image help me",
        "/image status now",
        "/image cancel 1 2",
        "/image cancel #",
        "/image retry",
        "/image retry 1 2",
        "/image history 5 6",
        "/image history 5 images",
        "/image again #",
        "/image again 1 2",
        "/image resend #",
        "/image file 1 2",
        "/image resend ab12 now",
        "/image stats 7 days",
        "/image stats 1 2",
        "/image cache clear now",
        "/image cache purge",
        "/image cache #",
        "/image histories",
    ],
)
def test_other_image_text_shows_the_usage(text: str) -> None:
    with pytest.raises(UsageError) as caught:
        parse(text)
    assert caught.value.user_message == usage_text(REGISTRY)


@pytest.mark.parametrize(
    ("text", "suggestion"),
    [
        ("/image flux a fox", "/image=flux=a fox"),
        ("/image FLUX a fox", "/image=flux=a fox"),
        ("/image sdxl=a fox --ar 16:9", "/image=sdxl=a fox --ar 16:9"),
        ("/image=flux a fox", "/image=flux=a fox"),
        ("/image =flux=cat", "/image=flux=cat"),
        ("/image flux=cat", "/image=flux=cat"),
        ("/image = flux = a = b", "/image=flux=a = b"),
        ("/image=flux a fox = tall", "/image=flux=a fox = tall"),
        ("/image flux", "/image=flux=a red fox in the snow"),
    ],
)
def test_a_near_miss_of_a_generation_command_is_one_line(text: str, suggestion: str) -> None:
    with pytest.raises(UsageError) as caught:
        parse(text)
    assert caught.value.user_message == f"Did you mean: {suggestion}"
    # The suggestion is itself a command that works.
    assert isinstance(parse(suggestion), ImageRequest)


@pytest.mark.parametrize("text", ["/image dalle a fox", "/image fluxx=a fox"])
def test_a_near_miss_without_a_known_model_still_shows_the_usage(text: str) -> None:
    with pytest.raises(UsageError) as caught:
        parse(text)
    assert caught.value.user_message == usage_text(REGISTRY)


def test_a_model_and_prompt_without_the_second_equals_sign_is_not_an_unknown_model() -> None:
    with pytest.raises(UsageError) as caught:
        parse("/image=sdxl a lighthouse --seed 5")
    assert caught.value.user_message == "Did you mean: /image=sdxl=a lighthouse --seed 5"
    with pytest.raises(UnknownModel):
        parse("/image=dalle a cat")


def test_subcommand_defaults() -> None:
    assert HistoryCommand() == HistoryCommand(limit=10)
    assert StatsCommand() == StatsCommand(days=7)
    assert CacheCommand() == CacheCommand(clear=False)


@pytest.mark.parametrize(
    ("verb", "maximum"), [("history", 50), ("stats", 365)], ids=["history", "stats"]
)
def test_count_boundaries(verb: str, maximum: int) -> None:
    command = HistoryCommand if verb == "history" else StatsCommand
    assert parse(f"/image {verb} 1") == command(1)
    assert parse(f"/image {verb} {maximum}") == command(maximum)


@pytest.mark.parametrize(
    ("text", "verb", "shown"),
    [
        ("/image history 0", "history", ["'0'", "1 to 50", "e.g. /image history 20"]),
        ("/image history 51", "history", ["'51'", "1 to 50", "number of images"]),
        ("/image history ten", "history", ["'ten'", "whole number from 1 to 50"]),
        ("/image history -5", "history", ["'-5'", "1 to 50"]),
        ("/image history 2.5", "history", ["'2.5'", "1 to 50"]),
        ("/image history #5", "history", ["'#5'", "1 to 50"]),
        ("/image history " + "9" * 5000, "history", ["…'", "1 to 50"]),
        ("/image stats 0", "stats", ["'0'", "1 to 365", "e.g. /image stats 30"]),
        ("/image stats 366", "stats", ["'366'", "1 to 365", "number of days"]),
        ("/image stats week", "stats", ["'week'", "whole number from 1 to 365"]),
        ("/image STATS +7", "stats", ["'+7'", "1 to 365"]),
    ],
)
def test_bad_counts_say_the_valid_range_and_an_example(
    text: str, verb: str, shown: list[str]
) -> None:
    with pytest.raises(BadFlag) as caught:
        parse(text)
    assert caught.value.flag == verb
    message = caught.value.user_message
    for fragment in shown:
        assert fragment in message
    assert len(message) < 300


# -- not ours --------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "",
        "hello",
        "image=flux=cat",
        "/imagefoo",
        "/imagine=flux=cat",
        "/images",
        "/image@",
        "/image@ help",
        "/image\x00=flux=cat",
        "/\u0130mage=flux=cat",
        "please /image=flux=cat",
    ],
)
def test_text_that_is_not_an_image_command(text: str) -> None:
    assert parse(text) is None
    assert not is_image_command(text)
    assert not is_generation_command(text)


@pytest.mark.parametrize(
    ("text", "generation"),
    [
        ("/image", False),
        ("/image help", False),
        ("/image foo", False),
        ("/image =flux=cat", False),
        ("/image=", True),
        (" /IMAGE=nope=x", True),
        ("/image@Bot=flux=cat", True),
        ("/image@Bot models", False),
    ],
)
def test_command_classification(text: str, generation: bool) -> None:
    assert is_image_command(text)
    assert is_generation_command(text) is generation


# -- usage text ------------------------------------------------------------------


def test_usage_text_lists_models_flags_examples_and_subcommands() -> None:
    text = usage_text(REGISTRY)
    assert "/image=<model>=<prompt>" in text
    assert "Models: flux, sdxl" in text
    assert "/image=flux=a red fox in the snow" in text
    assert "/image=sdxl=" in text
    assert "--ar 16:9 --seed 42" in text
    for flag in ("--ar", "--seed", "--neg", "--steps", "--style", "--raw", "--file"):
        assert flag in text
    assert "--fresh  make a new image even if the same one was made recently" in text
    assert (
        "More: /image help, models, status, cancel [job], retry <job>, history [n], "
        "again [job], file [job], resend [job] (without a job: as a reply to your image)"
    ) in text
    assert "/image set ar 16:9" in text
    assert "Owner: /image stats [days], /image cache [clear], /image whoami" in text
    assert (
        "flux takes --seed, --steps, --style, --raw, --file, --fresh, --n (steps up to 8)" in text
    )
    assert "FLUX_WORKER_URL" not in text
    assert len(text) < 1800
    # Plain text: nothing a Markdown parse mode would eat.
    assert "*" not in text
    assert "`" not in text
    assert "_" not in text.replace("FLUX_WORKER_URL", "").replace("SDXL_WORKER_URL", "")


def test_usage_examples_are_accepted_commands() -> None:
    examples = [line for line in usage_text(REGISTRY).splitlines() if line.startswith("/image=")]
    assert len(examples) >= 2
    for example in examples:
        assert isinstance(parse(example), ImageRequest)


def test_usage_text_with_one_model_uses_only_that_model() -> None:
    text = usage_text(ModelRegistry([FLUX]))
    assert "Models: flux" in text
    assert "sdxl" not in text
    for line in text.splitlines():
        if line.startswith("/image="):
            assert isinstance(
                parse_command(line, ModelRegistry([FLUX]), max_prompt_chars=MAX), ImageRequest
            )


def test_usage_text_without_models_tells_the_owner_what_to_set() -> None:
    text = usage_text(EMPTY)
    assert "No image model is configured" in text
    assert "FLUX_WORKER_URL" in text
    assert "SDXL_WORKER_URL" in text
    assert "Models:" not in text
    assert "Owner: /image stats [days], /image cache [clear], /image whoami" in text


# -- properties ------------------------------------------------------------------


def check_outcome(text: str) -> None:
    """``parse_command`` returns or refuses, and what it accepts is clean."""
    rejection: RequestRejected | None = None
    try:
        result = parse(text, max_chars=60)
    except RequestRejected as exc:
        rejection = exc
    if rejection is not None:
        assert rejection.user_message
        assert is_image_command(text)
        return
    assert (result is not None) == is_image_command(text)
    if isinstance(result, ImageRequest):
        assert is_generation_command(text)
        assert 1 <= len(result.prompt) <= 60
        assert result.prompt == result.prompt.strip()
        assert "  " not in result.prompt
        assert not any(is_removed_char(ch) or (ch.isspace() and ch != " ") for ch in result.prompt)
        negative = result.options.negative_prompt
        if negative is not None:
            assert 1 <= len(negative) <= 60
            assert not any(is_removed_char(ch) for ch in negative)
        if result.options.steps is not None:
            assert 1 <= result.options.steps <= SDXL.max_steps
    elif isinstance(result, HistoryCommand):
        assert 1 <= result.limit <= 50
    elif isinstance(result, StatsCommand):
        assert 1 <= result.days <= 365
    elif isinstance(result, AgainCommand | ResendCommand):
        # No id: the image the command replies to.
        assert result.job_id is None or result.job_id == result.job_id.lower()
    elif isinstance(result, RetryCommand):
        assert result.job_id
        assert result.job_id == result.job_id.lower()


@settings(deadline=None)
@given(st.text())
def test_any_text_is_parsed_or_refused(text: str) -> None:
    check_outcome(text)


@settings(deadline=None)
@given(st.text())
def test_any_flux_prompt_is_parsed_or_refused(tail: str) -> None:
    check_outcome("/image=flux=" + tail)


FLAGGY = st.lists(
    st.sampled_from(
        [
            "--ar",
            "--seed",
            "--neg",
            "--steps",
            "--style",
            "--raw",
            "--file",
            "--fresh",
            "--FRESH",
            "--foo",
            "16:9",
            "42",
            "0",
            "99",
            "anime",
            "\x00",
            "\u200b",
            ZWJ,
            "=",
            "cat",
            "\n",
            "🦊",
            "سلام",
        ]
    )
    | st.text(max_size=5),
    max_size=12,
).map(" ".join)


@settings(deadline=None)
@given(st.sampled_from(["/image=flux=", "/image=SDXL=", "/image=sdxl=a "]), FLAGGY)
def test_any_flag_soup_is_parsed_or_refused(prefix: str, tail: str) -> None:
    check_outcome(prefix + tail)


SUBCOMMAND_ARGS = st.lists(
    st.sampled_from(
        ["0", "1", "7", "50", "51", "365", "366", "-1", "٣", "clear", "#", "#ab", "AB", "\x00"]
    )
    | st.text(max_size=6),
    max_size=3,
).map(" ".join)


@settings(deadline=None)
@given(
    st.sampled_from(
        ["help", "cancel", "retry", "history", "again", "resend", "stats", "cache", "Stats"]
    ),
    SUBCOMMAND_ARGS,
)
def test_any_subcommand_soup_is_parsed_or_refused(verb: str, args: str) -> None:
    check_outcome(f"/image {verb} {args}")


# -- per-chat defaults ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("/image set seed 5", "'seed' is not a flag a chat can have a default for"),
        ("/image set ar", "it needs a value (or off), e.g. /image set ar 16:9."),
        ("/image set raw", "it needs on or off, e.g. /image set raw on."),
        ("/image set raw yes", "'yes' is neither on nor off"),
        ("/image set ar 7:3", "'7:3' is not a valid value. --ar needs one of"),
        ("/image set style cubist", "'cubist' is not a valid value. --style needs one of"),
        ("/image set steps 0", "--steps needs a whole number of 1 or more (sdxl uses at most"),
        ("/image set ar 16:9 9:16", "it takes one value, not '16:9 9:16'"),
    ],
)
def test_a_default_is_checked_by_the_flags_own_rules(text: str, expected: str) -> None:
    with pytest.raises(BadFlag) as caught:
        parse(text)
    assert expected in caught.value.user_message


def test_a_default_above_every_models_steps_is_kept_at_the_largest() -> None:
    assert parse("/image set steps 999") == DefaultsCommand("steps", str(SDXL.max_steps))


def test_defaults_fill_only_the_flags_a_request_left_out() -> None:
    defaults = {"ar": "16:9", "style": "artistic", "raw": "on", "steps": "50", "neg": "blur"}
    plain = ImageRequest("sdxl", "a fox")
    merged = with_defaults(plain, SDXL, defaults).options
    assert (merged.aspect_ratio, merged.style, merged.raw) == ("16:9", Style.ARTISTIC, True)
    assert (merged.steps, merged.negative_prompt) == (SDXL.max_steps, "blur")
    own = ImageRequest("sdxl", "a fox", ImageOptions(aspect_ratio="9:16", style=Style.ANIME))
    kept = with_defaults(own, SDXL, defaults).options
    assert (kept.aspect_ratio, kept.style) == ("9:16", Style.ANIME)


def test_a_default_the_model_does_not_take_is_skipped_for_it() -> None:
    request = ImageRequest("flux", "a fox")
    merged = with_defaults(request, FLUX, {"ar": "16:9", "neg": "blur", "file": "on"})
    assert merged.options == ImageOptions(as_file=True)
    # A stored value that no longer parses never makes a request fail.
    assert with_defaults(request, FLUX, {"style": "cubist", "steps": "x"}) == request

"""The ``/image`` grammar: chat text in, a typed command out, or one clear rejection.

``/image=<model>=<prompt> [flags]`` as in the original design: the model is
case-insensitive, the prompt is split on the first ``=`` after the model only,
control characters are removed and the prompt must be 1..N characters.
Known trailing flags are parsed; anything else stays in the prompt.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from functools import partial

from sakaibot.errors import (
    BadFlag,
    DidYouMean,
    EmptyPrompt,
    PromptTooLong,
    UnknownModel,
    UnsupportedFlag,
    UsageError,
)
from sakaibot.i18n import ENGLISH, N_, Texts
from sakaibot.models import ASPECT_RATIOS, UNIVERSAL_FLAGS, Contract, ModelRegistry, ModelSpec


class Style(StrEnum):
    REALISTIC = "realistic"
    ARTISTIC = "artistic"
    ANIME = "anime"
    PHOTOGRAPHIC = "photographic"


#: Words each ``--style`` adds to the prompt, whether or not an LLM is configured.
STYLE_WORDS: dict[Style, str] = {
    Style.REALISTIC: "realistic, highly detailed, natural lighting, lifelike textures",
    Style.ARTISTIC: "artistic, painterly, expressive brushwork, rich colour palette",
    Style.ANIME: "anime style, cel shading, vibrant colours, clean line art",
    Style.PHOTOGRAPHIC: "professional photograph, 50mm lens, shallow depth of field, sharp focus",
}


@dataclass(frozen=True)
class ImageOptions:
    """The per-request flags; ``None``/``False`` when not given."""

    aspect_ratio: str | None = None  # one of models.ASPECT_RATIOS
    seed: int | None = None
    negative_prompt: str | None = None
    steps: int | None = None  # already clamped to the model's maximum
    style: Style | None = None
    raw: bool = False  # skip prompt enhancement
    as_file: bool = False  # deliver as a document
    fresh: bool = False  # skip the result cache: always generate


@dataclass(frozen=True)
class ImageRequest:
    """``/image=<model>=<prompt>``: one generation to queue."""

    model: str  # the registry's name for the model (lower case)
    prompt: str  # sanitised, flags removed
    options: ImageOptions = ImageOptions()
    #: The ``--steps`` value asked for when it was above the model's maximum.
    steps_requested: int | None = None
    #: ``--n``: how many images (each its own job), sent together as one album.
    count: int = 1


#: ``/image history``: how many images; ``/image stats``: how many days (by default).
HISTORY_DEFAULT = 10
STATS_DEFAULT_DAYS = 7


@dataclass(frozen=True)
class HelpCommand:
    """``/image`` or ``/image help``."""


@dataclass(frozen=True)
class ModelsCommand:
    """``/image models``."""


@dataclass(frozen=True)
class StatusCommand:
    """``/image status``."""


@dataclass(frozen=True)
class CancelCommand:
    """``/image cancel [job]``; ``job_id`` ``None`` means the user's newest waiting job."""

    job_id: str | None = None


@dataclass(frozen=True)
class RetryCommand:
    """``/image retry <job>``: send again an image that was made but not delivered."""

    job_id: str


@dataclass(frozen=True)
class HistoryCommand:
    """``/image history [n]``: the user's ``limit`` most recent images."""

    limit: int = HISTORY_DEFAULT


@dataclass(frozen=True)
class AgainCommand:
    """``/image again [job]``: generate again with the same prompt and a new seed.

    ``job_id`` ``None``: the image the command replies to.
    """

    job_id: str | None = None


@dataclass(frozen=True)
class ResendCommand:
    """``/image resend [job]``: send an earlier image again, without generating;
    ``/image file [job]`` is the same as a file (a document, the original bytes).

    ``job_id`` ``None``: the image the command replies to.
    """

    job_id: str | None = None
    as_file: bool = False


@dataclass(frozen=True)
class DefaultsCommand:
    """``/image set [<flag> <value> | reset]``: this chat's default flags.

    No ``flag`` and no ``reset``: show them. ``value`` ``None`` clears ``flag``.
    """

    flag: str | None = None
    value: str | None = None
    reset: bool = False


@dataclass(frozen=True)
class StatsCommand:
    """``/image stats [days]`` (for the owner): usage over the last ``days`` days."""

    days: int = STATS_DEFAULT_DAYS


@dataclass(frozen=True)
class CacheCommand:
    """``/image cache [clear]`` (for the owner): the result cache, or empty it."""

    clear: bool = False


@dataclass(frozen=True)
class WhoamiCommand:
    """``/image whoami`` (for the owner): this chat's id and the sender's, for ALLOWED_*_IDS."""


@dataclass(frozen=True)
class LangCommand:
    """``/image lang [code]``: the chat's language, or (the owner) choose it."""

    language: str | None = None


Command = (
    ImageRequest
    | HelpCommand
    | ModelsCommand
    | StatusCommand
    | CancelCommand
    | RetryCommand
    | HistoryCommand
    | AgainCommand
    | ResendCommand
    | StatsCommand
    | CacheCommand
    | WhoamiCommand
    | LangCommand
    | DefaultsCommand
)


_COMMAND_WORD = "/image"

#: Format characters kept by the sanitiser: emoji sequences need the zero-width
#: joiner, Persian (and other scripts) need the zero-width non-joiner.
_KEPT_FORMAT_CHARS = frozenset({"\u200d", "\u200c"})
#: Control, format (zero-width, bidi overrides, tag characters) and lone surrogates.
_REMOVED_CATEGORIES = frozenset({"Cc", "Cf", "Cs"})

#: Every flag name, in the order the usage text lists them.
_FLAG_NAMES = ("ar", "seed", "neg", "steps", "style", "raw", "file", "fresh", "n")
#: Flags every model takes: they act on the prompt, the delivery or the result
#: cache, not on the worker. "fresh" is added here too, so the grammar accepts it
#: whether or not models.UNIVERSAL_FLAGS lists it yet; so is "n" (several jobs).
_UNIVERSAL_FLAGS = frozenset({*UNIVERSAL_FLAGS, "fresh", "n"})
#: Dashes phone keyboards substitute for "--" ("smart punctuation").
_DASH_PREFIXES = ("--", "\u2014", "\u2013")

MAX_SEED = 4_294_967_295
#: Longest number (in significant digits) we convert; protects ``int()`` from huge input.
_MAX_NUMBER_DIGITS = 20
#: How much of a user's text an error message quotes.
_QUOTE_CHARS = 40
EXAMPLE_PROMPT = "a red fox in the snow"
#: A generation command with its "=" signs astray: "flux a fox", "= flux = a fox".
_TYPO_FORM = re.compile(r"=? ?(?P<model>[^ =]+) ?=? ?(?P<prompt>.*)")

#: ``--n`` without IMAGE_MAX_PER_REQUEST: at most this many images per request.
DEFAULT_MAX_PER_REQUEST = 4
#: Flags a chat may set a default for (``/image set``). Not --seed (every image
#: would come out the same) nor --fresh (it would switch the result cache off).
DEFAULT_FLAGS = ("ar", "neg", "steps", "style", "raw", "file")
#: Flags without a value, set with ``on``; ``off`` clears any default.
_SWITCHES = frozenset({"raw", "file"})
_ON, _OFF = "on", "off"
_STYLE_NAMES = frozenset(style.value for style in Style)

#: ``/image history [n]`` and ``/image stats [days]``: at most.
_HISTORY_MAX = 50
_STATS_MAX_DAYS = 365


def is_image_command(text: str) -> bool:
    """Whether ``text`` is addressed to the image feature at all (``/image`` ...)."""
    return _command_rest(text) is not None


def is_generation_command(text: str) -> bool:
    """Whether ``text`` is a generation attempt (``/image=...``), accepted or not."""
    rest = _command_rest(text)
    return rest is not None and rest.startswith("=")


def usage_text(
    registry: ModelRegistry,
    texts: Texts = ENGLISH,
    *,
    max_per_request: int = DEFAULT_MAX_PER_REQUEST,
) -> str:
    """The help text: grammar, flags, examples and the models configured."""
    _ = texts.gettext
    lines = [_("Make an image: /image=<model>=<prompt> [flags]")]
    models = list(zip(registry.names(), registry, strict=True))
    if models:
        lines.append(_("Examples:"))
        lines.extend(_examples(models))
    lines.append(_("Flags (optional, at the end, after the prompt):"))
    lines.extend(
        [
            _("--ar <ratio>  picture shape: {ratios}", ratios=", ".join(ASPECT_RATIOS)),
            _("--seed <n>  the same number repeats a result (0 to {max})", max=MAX_SEED),
            _("--neg <text>  what to keep out of the image"),
            _("--steps <n>  more steps, more detail, slower (each model has a maximum)"),
            "--style <name>  " + ", ".join(style.value for style in Style),
            _("--raw  use your prompt as written, without enhancement"),
            _("--file  send the image as a file, uncompressed"),
            _("--fresh  make a new image even if the same one was made recently"),
            n_flag_help(max_per_request, texts),
        ]
    )
    lines.append(
        _(
            "More: /image help, models, status, cancel [job], retry <job>, history [n], "
            "again [job], file [job], resend [job] (without a job: as a reply to your image), "
            "lang [en|fa]"
        )
    )
    lines.append(
        _(
            "This chat's defaults: /image set (shows them), /image set <flag> <value> "
            "({flags}; e.g. /image set ar 16:9, /image set raw on), "
            "/image set <flag> off, /image set reset. Your own flags win.",
            flags=", ".join(DEFAULT_FLAGS),
        )
    )
    lines.append(_("Owner: /image stats [days], /image cache [clear], /image whoami"))
    if models:
        lines.append(_("Models: {names}", names=", ".join(name for name, _spec in models)))
        for name, spec in models:
            flags = ", ".join(_supported_flags(spec))
            if spec.supports("steps"):
                line = _(
                    "{model} takes {flags} (steps up to {max_steps})",
                    model=name,
                    flags=flags,
                    max_steps=spec.max_steps,
                )
            else:
                line = _("{model} takes {flags}", model=name, flags=flags)
            lines.append(line)
    else:
        lines.append(
            _(
                "No image model is configured yet: the bot's owner should set "
                "FLUX_WORKER_URL or SDXL_WORKER_URL."
            )
        )
    return "\n".join(lines)


def per_request_text(max_per_request: int, texts: Texts = ENGLISH) -> str:
    """What ``/image models`` says about ``--n``."""
    if max_per_request == 1:
        return texts.gettext("Each request makes one image.")
    return texts.gettext(
        "One request may ask for up to {max} images with --n (e.g. --n {example}); "
        "they come as one album.",
        max=max_per_request,
        example=min(max_per_request, 4),
    )


def n_flag_help(max_per_request: int, texts: Texts = ENGLISH) -> str:
    """The usage line of ``--n``, with how many a request may ask for."""
    if max_per_request == 1:
        return texts.gettext("--n  one image per request here (IMAGE_MAX_PER_REQUEST is 1)")
    return texts.gettext(
        "--n <2..{max}>  several variations at once, with different seeds, sent as one album",
        max=max_per_request,
    )


def _examples(models: Sequence[tuple[str, ModelSpec]]) -> list[str]:
    """Three example commands for the configured models, one of them with flags."""
    first = models[0][0]
    flagged = next((name for name, spec in models if spec.supports("ar")), None)
    if flagged is not None:
        spec = next(spec for name, spec in models if name == flagged)
        flags = "--ar 16:9 --seed 42" if spec.supports("seed") else "--ar 16:9"
    else:
        flagged = next((name for name, spec in models if spec.supports("seed")), first)
        spec = next(spec for name, spec in models if name == flagged)
        flags = "--seed 42" if spec.supports("seed") else "--style photographic"
    return [
        f"/image={first}={EXAMPLE_PROMPT}",
        f"/image={flagged}=a lighthouse at dusk, stormy sea {flags}",
        f"/image={first}=a cosy cabin in the woods --style anime --raw",
    ]


def parse_command(
    text: str,
    registry: ModelRegistry,
    *,
    max_prompt_chars: int,
    max_per_request: int = DEFAULT_MAX_PER_REQUEST,
) -> Command | None:
    """Parse one chat message.

    Returns ``None`` when the text is not an ``/image`` command, the command
    otherwise. Raises a :class:`~sakaibot.errors.RequestRejected` subclass for
    every input it refuses; it never raises anything else.
    """
    rest = _command_rest(text)
    if rest is None:
        return None
    if rest.startswith("="):
        return _parse_generation(
            rest[1:], registry, max_prompt_chars=max_prompt_chars, max_per_request=max_per_request
        )
    return _parse_subcommand(rest, registry, max_prompt_chars=max_prompt_chars)


# -- the command word ------------------------------------------------------------


def _command_rest(text: str) -> str | None:
    """What follows the ``/image`` command word (and any ``@BotName``), or ``None``.

    ``None`` means the text is not addressed to the image feature at all.
    """
    stripped = text.lstrip()
    head = stripped[: len(_COMMAND_WORD)]
    # isascii(): only the ASCII letters spell the command word (no look-alikes).
    if not (head.isascii() and head.lower() == _COMMAND_WORD):
        return None
    rest = stripped[len(_COMMAND_WORD) :]
    if rest.startswith("@"):
        end = 1
        while end < len(rest) and rest[end] != "=" and not rest[end].isspace():
            end += 1
        if end == 1:  # a bare "@" names no bot
            return None
        rest = rest[end:]
    if rest and rest[0] != "=" and not rest[0].isspace():
        return None  # e.g. /imagefoo: some other command
    return rest


def strip_invisible(text: str) -> str:
    """``text`` without control, format (bidi, zero-width, tags) or lone surrogate
    characters; whitespace, the zero-width joiner and non-joiner are kept.

    The one rule for text from outside: users' commands and the LLM's answers.
    """
    return "".join(
        ch
        for ch in text
        if ch.isspace()
        or ch in _KEPT_FORMAT_CHARS
        or unicodedata.category(ch) not in _REMOVED_CATEGORIES
    )


def _sanitise(text: str) -> str:
    """Drop control and invisible format characters; fold whitespace to single spaces."""
    return " ".join(strip_invisible(text).split())


def _shorten(text: str) -> str:
    """A user's text cut to a length fit for an error message."""
    return text if len(text) <= _QUOTE_CHARS else text[: _QUOTE_CHARS - 1] + "…"


def _given_twice(texts: Texts, *, example: str) -> str:
    return texts.gettext(
        "it was given twice. Give each flag once, e.g. {example}.", example=example
    )


def _flag_error(flag: str, problem: Callable[[Texts], str]) -> BadFlag:
    """A :class:`BadFlag` whose problem is told in the language of the chat it reaches."""
    return BadFlag(flag, problem(ENGLISH), render=problem)


# -- subcommands -----------------------------------------------------------------


def _parse_subcommand(rest: str, registry: ModelRegistry, *, max_prompt_chars: int) -> Command:
    words = _sanitise(rest).split()
    if not words:
        return HelpCommand()
    if words[0].lower() == "set":
        return _defaults_command(words[1:], registry, max_prompt_chars=max_prompt_chars)
    command = _subcommand(words[0].lower(), words[1:])
    if command is None:
        raise _typo(rest, registry) or _usage_error(registry)
    return command


def _usage_error(registry: ModelRegistry) -> UsageError:
    """The help as a rejection, told in the language of the chat it reaches."""
    return UsageError(usage_text(registry), render=partial(usage_text, registry))


def _typo(text: str, registry: ModelRegistry) -> DidYouMean | None:
    """``/image flux a fox``, ``/image sdxl=a fox``, ``/image=flux a fox``: a generation
    command with an ``=`` missing or misplaced, told in one line instead of the help.

    ``text`` is what follows the command word (the first ``=`` already dropped
    for ``/image=...``). Only a configured model's name counts as a model, so
    anything else still gets the full help.
    """
    match = _TYPO_FORM.fullmatch(_sanitise(text))
    if match is None or registry.get(match.group("model")) is None:
        return None
    model = match.group("model").lower()
    prompt = match.group("prompt") or EXAMPLE_PROMPT
    return DidYouMean(f"{_COMMAND_WORD}={model}={prompt}")


def _subcommand(verb: str, args: Sequence[str]) -> Command | None:
    """The subcommand ``verb`` with its arguments, or ``None`` when it is not one."""
    if len(args) > 1:
        return None
    arg = args[0] if args else None
    if arg is None:
        if verb == "help":
            return HelpCommand()
        if verb == "models":
            return ModelsCommand()
        if verb == "status":
            return StatusCommand()
        if verb == "cancel":
            return CancelCommand(None)
        if verb == "history":
            return HistoryCommand(HISTORY_DEFAULT)
        if verb == "stats":
            return StatsCommand(STATS_DEFAULT_DAYS)
        if verb == "cache":
            return CacheCommand(clear=False)
        if verb == "whoami":
            return WhoamiCommand()
        if verb == "lang":
            return LangCommand()
        if verb == "again":
            return AgainCommand(None)
        if verb == "resend":
            return ResendCommand(None)
        if verb == "file":
            return ResendCommand(None, as_file=True)
        return None
    if verb == "history":
        return HistoryCommand(_count_argument("history", arg, _HISTORY_MAX, N_("images"), 20))
    if verb == "stats":
        return StatsCommand(_count_argument("stats", arg, _STATS_MAX_DAYS, N_("days"), 30))
    if verb == "cache":
        return CacheCommand(clear=True) if arg.lower() == "clear" else None
    if verb == "lang":
        return LangCommand(arg.lower())
    job_id = arg.lower().removeprefix("#")
    if not job_id:
        return None
    if verb == "cancel":
        return CancelCommand(job_id)
    if verb == "retry":
        return RetryCommand(job_id)
    if verb == "again":
        return AgainCommand(job_id)
    if verb == "resend":
        return ResendCommand(job_id)
    if verb == "file":
        return ResendCommand(job_id, as_file=True)
    return None


# -- per-chat defaults -------------------------------------------------------------


def _defaults_command(
    args: Sequence[str], registry: ModelRegistry, *, max_prompt_chars: int
) -> DefaultsCommand:
    """``/image set ...``; the value is checked by the same rules as the flag's."""
    if not args:
        return DefaultsCommand()
    name = args[0].lower().lstrip("-\u2014\u2013")
    values = args[1:]
    if name == "reset" and not values:
        return DefaultsCommand(reset=True)
    if name not in DEFAULT_FLAGS:
        given = _shorten(args[0])
        raise _flag_error(
            "/image set",
            lambda texts: texts.gettext(
                "'{given}' is not a flag a chat can have a default for. Those are: "
                "{flags}, e.g. /image set ar 16:9; /image set reset clears them all.",
                given=given,
                flags=", ".join(DEFAULT_FLAGS),
            ),
        )
    example = _set_example(name)
    if not values:
        if name in _SWITCHES:
            raise _flag_error(
                f"/image set {name}",
                lambda texts: texts.gettext("it needs on or off, e.g. {example}.", example=example),
            )
        raise _flag_error(
            f"/image set {name}",
            lambda texts: texts.gettext(
                "it needs a value (or off), e.g. {example}.", example=example
            ),
        )
    if len(values) == 1 and values[0].lower() == _OFF:
        return DefaultsCommand(flag=name, value=None)
    given = _shorten(" ".join(values))
    if name in _SWITCHES:
        if len(values) != 1 or values[0].lower() != _ON:
            raise _flag_error(
                f"/image set {name}",
                lambda texts: texts.gettext(
                    "'{given}' is neither on nor off, e.g. {example}.",
                    given=given,
                    example=example,
                ),
            )
        return DefaultsCommand(flag=name, value=_ON)
    if name != "neg" and len(values) > 1:
        raise _flag_error(
            f"/image set {name}",
            lambda texts: texts.gettext(
                "it takes one value, not '{given}', e.g. {example}.",
                given=given,
                example=example,
            ),
        )
    # The flag's own parser, on a model that takes every flag: the same rules
    # and messages as in a request. Steps are checked against the largest
    # maximum of any model and capped for each model when a request uses them.
    spec = _defaults_model(registry)
    parsed = _FlagParser(spec.name, spec, [f"--{name}", *values], max_prompt_chars).parse("-")
    options = parsed.options
    value = {
        "ar": options.aspect_ratio,
        "neg": options.negative_prompt,
        "steps": None if options.steps is None else str(options.steps),
        "style": None if options.style is None else options.style.value,
    }[name]
    return DefaultsCommand(flag=name, value=value)


def _set_example(name: str) -> str:
    examples = {
        "ar": "16:9",
        "neg": "blurry watermark",
        "steps": "8",
        "style": "artistic",
        "raw": _ON,
        "file": _ON,
    }
    return f"/image set {name} {examples[name]}"


def _defaults_model(registry: ModelRegistry) -> ModelSpec:
    """A model that takes every flag, with the largest step maximum configured."""
    widest = max(registry, key=lambda spec: spec.max_steps, default=None)
    every_flag = frozenset(_FLAG_NAMES)
    if widest is None:  # no model configured: still check the values
        return ModelSpec(name="every model", contract=Contract.GET, url="", options=every_flag)
    return replace(widest, options=every_flag)


def with_defaults(
    request: ImageRequest, spec: ModelSpec, defaults: Mapping[str, str]
) -> ImageRequest:
    """``request`` with a chat's defaults for the flags it did not give itself.

    The request's own flags win. A default ``spec`` does not take (``--ar`` on
    a model without it) is skipped for that model, as is a stored value that
    no longer parses: defaults never make a request fail.
    """
    options = request.options
    aspect_ratio, negative, steps = options.aspect_ratio, options.negative_prompt, options.steps
    style, raw, as_file = options.style, options.raw, options.as_file
    for name, value in defaults.items():
        if name not in DEFAULT_FLAGS or not _supports(spec, name):
            continue
        if name == "ar" and aspect_ratio is None and value in ASPECT_RATIOS:
            aspect_ratio = value
        elif name == "neg" and negative is None and value:
            negative = value
        elif name == "steps" and steps is None:
            number = _whole_number(value)
            if number is not None and number >= 1:
                steps = min(number, spec.max_steps)
        elif name == "style" and style is None and value in _STYLE_NAMES:
            style = Style(value)
        elif name == "raw":
            raw = raw or value == _ON
        elif name == "file":
            as_file = as_file or value == _ON
    merged = replace(
        options,
        aspect_ratio=aspect_ratio,
        negative_prompt=negative,
        steps=steps,
        style=style,
        raw=raw,
        as_file=as_file,
    )
    return request if merged == options else replace(request, options=merged)


def default_flag_text(name: str, value: str) -> str:
    """A stored default as the flag a request would carry (``--ar 16:9``, ``--raw``)."""
    return f"--{name}" if name in _SWITCHES else f"--{name} {value}"


def _count_argument(verb: str, value: str, maximum: int, unit: str, example: int) -> int:
    """``value`` as a whole number from 1 to ``maximum``; else a clear rejection."""
    count = _whole_number(value)
    if count is None or not 1 <= count <= maximum:
        raise _flag_error(
            verb,
            lambda texts: texts.gettext(
                "'{value}' is not a valid number of {unit}. /image {verb} takes a whole "
                "number from 1 to {maximum}, e.g. /image {verb} {example}.",
                value=_shorten(value),
                unit=texts.gettext(unit),
                verb=verb,
                maximum=maximum,
                example=example,
            ),
        )
    return count


# -- generation ------------------------------------------------------------------


def _parse_generation(
    body: str, registry: ModelRegistry, *, max_prompt_chars: int, max_per_request: int
) -> ImageRequest:
    model_text, has_prompt, prompt_text = body.partition("=")
    model_name = _sanitise(model_text)
    if not model_name:
        raise _usage_error(registry)
    spec = registry.get(model_name)
    if spec is None:
        # "/image=flux a fox": the "=" after the model is missing or misplaced.
        raise _typo(body, registry) or UnknownModel(_shorten(model_name), registry.names())
    key = model_name.lower()  # the registry's own (lower-case) name for it
    if not has_prompt:
        raise EmptyPrompt(key)

    tokens = _sanitise(prompt_text).split()
    first_flag = next(
        (i for i, token in enumerate(tokens) if _flag_name(token) is not None), len(tokens)
    )
    prompt = " ".join(tokens[:first_flag])
    if not prompt:
        raise EmptyPrompt(key)
    if len(prompt) > max_prompt_chars:
        raise PromptTooLong(len(prompt), max_prompt_chars)

    return _FlagParser(key, spec, tokens[first_flag:], max_prompt_chars, max_per_request).parse(
        prompt
    )


def _flag_name(token: str) -> str | None:
    """The flag ``token`` names (``"seed"`` for ``--SEED`` or ``—seed``), or ``None``."""
    for prefix in _DASH_PREFIXES:
        if token.startswith(prefix):
            name = token[len(prefix) :].lower()
            return name if name in _FLAG_NAMES else None
    return None


def _supports(spec: ModelSpec, name: str) -> bool:
    """Whether ``spec`` takes the flag ``name`` (the universal flags always)."""
    return name in _UNIVERSAL_FLAGS or spec.supports(name)


def _supported_flags(spec: ModelSpec) -> list[str]:
    """Every flag ``spec`` takes, in the order the usage text lists them."""
    return [f"--{name}" for name in _FLAG_NAMES if _supports(spec, name)]


def _whole_number(text: str) -> int | None:
    """``text`` as a non-negative whole number, or ``None`` (any script's digits)."""
    if not text.isdecimal() or len(text.lstrip("0")) > _MAX_NUMBER_DIGITS:
        return None
    try:
        return int(text)
    except ValueError:  # pragma: no cover - isdecimal() already rules this out
        return None


class _FlagParser:
    """Reads the flag section: the tokens from the first known flag to the end."""

    def __init__(
        self,
        model: str,
        spec: ModelSpec,
        tokens: Sequence[str],
        max_chars: int,
        max_per_request: int = DEFAULT_MAX_PER_REQUEST,
    ) -> None:
        self._max_per_request = max_per_request
        self._model = model
        self._spec = spec
        self._tokens = tokens
        self._max_chars = max_chars
        self._pos = 0
        self._seen: set[str] = set()

    def parse(self, prompt: str) -> ImageRequest:
        aspect_ratio: str | None = None
        seed: int | None = None
        negative: str | None = None
        steps: int | None = None
        steps_requested: int | None = None
        style: Style | None = None
        count = 1
        raw = as_file = fresh = False
        last_flag = ""
        while self._pos < len(self._tokens):
            token = self._tokens[self._pos]
            name = _flag_name(token)
            if name is None:
                raise self._stray(token, last_flag)
            flag = f"--{name}"
            last_flag = flag
            self._pos += 1
            if not _supports(self._spec, name):
                raise UnsupportedFlag(flag, self._model, _supported_flags(self._spec))
            if name in self._seen:
                raise _flag_error(
                    flag,
                    partial(_given_twice, example=self._example(name)),
                )
            self._seen.add(name)
            if name == "raw":
                raw = True
            elif name == "file":
                as_file = True
            elif name == "fresh":
                fresh = True
            elif name == "neg":
                negative = self._negative()
            else:
                value = self._value(name)
                if name == "ar":
                    aspect_ratio = self._aspect_ratio(value)
                elif name == "seed":
                    seed = self._seed(value)
                elif name == "steps":
                    steps, steps_requested = self._steps(value)
                elif name == "n":
                    count = self._count(value)
                else:
                    style = self._style(value)
        options = ImageOptions(
            aspect_ratio=aspect_ratio,
            seed=seed,
            negative_prompt=negative,
            steps=steps,
            style=style,
            raw=raw,
            as_file=as_file,
            fresh=fresh,
        )
        return ImageRequest(
            model=self._model,
            prompt=prompt,
            options=options,
            steps_requested=steps_requested,
            count=count,
        )

    # -- values ----------------------------------------------------------------

    def _value(self, name: str) -> str:
        """The one token after a flag that takes a value."""
        if self._pos >= len(self._tokens) or _flag_name(self._tokens[self._pos]) is not None:
            raise _flag_error(
                f"--{name}",
                lambda texts: texts.gettext(
                    "its value is missing. {rule}", rule=self._rule(name, texts)
                ),
            )
        value = self._tokens[self._pos]
        self._pos += 1
        return value

    def _negative(self) -> str:
        start = self._pos
        while self._pos < len(self._tokens) and _flag_name(self._tokens[self._pos]) is None:
            self._pos += 1
        text = " ".join(self._tokens[start : self._pos])
        if not text:
            raise _flag_error(
                "--neg",
                lambda texts: texts.gettext(
                    "its text is missing. {rule}", rule=self._rule("neg", texts)
                ),
            )
        if len(text) > self._max_chars:
            over = len(text) - self._max_chars
            raise _flag_error(
                "--neg",
                lambda texts: texts.gettext(
                    "the negative prompt is {length} characters long; the limit is "
                    "{limit}. Shorten it by {over}.",
                    length=len(text),
                    limit=self._max_chars,
                    over=texts.ngettext("{count} character", "{count} characters", over),
                ),
            )
        return text

    def _aspect_ratio(self, value: str) -> str:
        if value not in ASPECT_RATIOS:
            raise self._bad_value("ar", value)
        return value

    def _seed(self, value: str) -> int:
        seed = _whole_number(value)
        if seed is None or seed > MAX_SEED:
            raise self._bad_value("seed", value)
        return seed

    def _steps(self, value: str) -> tuple[int, int | None]:
        steps = _whole_number(value)
        if steps is None or steps < 1:
            raise self._bad_value("steps", value)
        if steps > self._spec.max_steps:
            return self._spec.max_steps, steps
        return steps, None

    def _count(self, value: str) -> int:
        count = _whole_number(value)
        if count is None or not 1 <= count <= self._max_per_request:
            raise self._bad_value("n", value)
        return count

    def _style(self, value: str) -> Style:
        try:
            return Style(value.lower())
        except ValueError:
            raise self._bad_value("style", value) from None

    # -- messages --------------------------------------------------------------

    def _bad_value(self, name: str, value: str) -> BadFlag:
        return _flag_error(
            f"--{name}",
            lambda texts: texts.gettext(
                "'{value}' is not a valid value. {rule}",
                value=_shorten(value),
                rule=self._rule(name, texts),
            ),
        )

    def _rule(self, name: str, texts: Texts) -> str:
        """What a flag's value must be, with an example."""
        example = self._example(name)
        if name == "ar":
            return texts.gettext(
                "--ar needs one of {ratios}, e.g. {example}.",
                ratios=", ".join(ASPECT_RATIOS),
                example=example,
            )
        if name == "seed":
            return texts.gettext(
                "--seed needs a whole number from 0 to {max}, e.g. {example}.",
                max=MAX_SEED,
                example=example,
            )
        if name == "steps":
            return texts.gettext(
                "--steps needs a whole number of 1 or more ({model} uses at most "
                "{max_steps}), e.g. {example}.",
                model=self._model,
                max_steps=self._spec.max_steps,
                example=example,
            )
        if name == "n":
            if self._max_per_request == 1:
                return texts.gettext("Here each request makes one image: leave out --n.")
            return texts.gettext(
                "--n needs how many images to make at once, from 1 to {max}, e.g. {example}.",
                max=self._max_per_request,
                example=example,
            )
        if name == "style":
            return texts.gettext(
                "--style needs one of {styles}, e.g. {example}.",
                styles=", ".join(style.value for style in Style),
                example=example,
            )
        return texts.gettext(
            "--neg needs the words to keep out of the image, e.g. {example}.", example=example
        )

    def _example(self, name: str) -> str:
        examples = {
            "ar": "--ar 16:9",
            "seed": "--seed 42",
            "neg": "--neg blurry watermark",
            "steps": f"--steps {self._spec.max_steps}",
            "style": "--style anime",
            "raw": "--raw",
            "file": "--file",
            "fresh": "--fresh",
            "n": f"--n {min(self._max_per_request, 4)}",
        }
        return examples[name]

    def _stray(self, token: str, last_flag: str) -> BadFlag:
        """Text inside the flag section that is neither a flag nor a flag's value."""
        end = self._pos
        while end < len(self._tokens) and _flag_name(self._tokens[end]) is None:
            end += 1
        stray = " ".join(self._tokens[self._pos : end])

        def where(texts: Texts) -> str:
            return texts.gettext(
                "Flags go at the end: write the whole prompt first, then the flags, "
                "e.g. /image={model}={prompt} {example}.",
                model=self._model,
                prompt=EXAMPLE_PROMPT,
                example=self._example(last_flag[2:]),
            )

        if token.startswith("--") and len(token) > 2:
            supported = ", ".join(_supported_flags(self._spec))
            return _flag_error(
                _shorten(token),
                lambda texts: texts.gettext(
                    "'{flag}' is not a flag SakaiBot knows. Flags {model} takes: "
                    "{supported}. {where}",
                    flag=_shorten(token),
                    model=self._model,
                    supported=supported,
                    where=where(texts),
                ),
            )
        return _flag_error(
            last_flag,
            lambda texts: texts.gettext(
                "'{stray}' is neither a flag nor a value of {flag}. {where}",
                stray=_shorten(stray),
                flag=last_flag,
                where=where(texts),
            ),
        )

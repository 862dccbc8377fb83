"""The ``/image`` grammar: chat text in, a typed command out, or one clear rejection.

``/image=<model>=<prompt> [flags]`` as in the original design: the model is
case-insensitive, the prompt is split on the first ``=`` after the model only,
control characters are removed and the prompt must be 1..N characters.
Known trailing flags are parsed; anything else stays in the prompt.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from sakaibot.models import ModelRegistry


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


@dataclass(frozen=True)
class ImageRequest:
    """``/image=<model>=<prompt>``: one generation to queue."""

    model: str  # the registry's name for the model (lower case)
    prompt: str  # sanitised, flags removed
    options: ImageOptions = ImageOptions()
    #: The ``--steps`` value asked for when it was above the model's maximum.
    steps_requested: int | None = None


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


Command = ImageRequest | HelpCommand | ModelsCommand | StatusCommand | CancelCommand


def is_image_command(text: str) -> bool:
    """Whether ``text`` is addressed to the image feature at all (``/image`` ...)."""
    raise NotImplementedError


def is_generation_command(text: str) -> bool:
    """Whether ``text`` is a generation attempt (``/image=...``), accepted or not."""
    raise NotImplementedError


def usage_text(registry: ModelRegistry) -> str:
    """The help text: grammar, flags, examples and the models configured."""
    raise NotImplementedError


def parse_command(text: str, registry: ModelRegistry, *, max_prompt_chars: int) -> Command | None:
    """Parse one chat message.

    Returns ``None`` when the text is not an ``/image`` command, the command
    otherwise. Raises a :class:`~sakaibot.errors.RequestRejected` subclass for
    every input it refuses; it never raises anything else.
    """
    raise NotImplementedError

"""The generator boundary: what the pipeline asks of an image worker, and what it gets back.

The boundary returns a typed ``(success, data, error)`` tuple, as the original
design requires; everything behind it raises typed exceptions from
:mod:`sakaibot.errors`, so retries see real exceptions (defect 2).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Protocol

from sakaibot.errors import GenerationError
from sakaibot.models import ModelSpec


@dataclass(frozen=True)
class GenerationParams:
    """What one worker call asks for; ``None`` means "the worker's default"."""

    prompt: str
    negative_prompt: str | None = None
    width: int | None = None
    height: int | None = None
    seed: int | None = None
    steps: int | None = None
    #: The job this request belongs to; lets a shared queue see a repeated request
    #: (a front end restarted mid-generation) as the same one. Workers ignore it.
    request_id: str | None = None


@dataclass(frozen=True)
class GeneratedImage:
    """Image bytes with the format read from the bytes themselves (defect 6)."""

    data: bytes
    mime_type: str  # "image/jpeg", "image/png", "image/webp", "image/gif"
    extension: str  # ".jpg", ".png", ".webp", ".gif"
    width: int
    height: int

    @property
    def size_bytes(self) -> int:
        return len(self.data)


class GenerationResult(NamedTuple):
    """The ``(success, data, error)`` tuple of the generator boundary."""

    success: bool
    data: GeneratedImage | None
    error: GenerationError | None


class ImageGenerator(Protocol):
    """Anything that turns a prompt into an image for a given model."""

    async def generate(self, model: ModelSpec, params: GenerationParams) -> GenerationResult:
        """Never raises for a generation failure: the error is in the result."""
        ...

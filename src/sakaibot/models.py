"""The model registry: every image model is data (contract, URL, key, options, limits).

Adding a model is configuration, not code (defect 10 of the original design):
a model speaks one of the two worker contracts described in
``docs/image-generation/configuration.md`` and says which per-request flags
it honours. A model whose worker is not configured is simply not offered.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum

from pydantic import SecretStr


class Contract(StrEnum):
    """How a worker is called."""

    GET = "get"  # GET <url>?prompt=...  (the "Flux worker" shape)
    POST = "post"  # POST <url> JSON, Bearer key  (the "SDXL worker" shape)


#: Flags a model may declare; --style, --raw, --file and --fresh work for every
#: model because they act on the prompt, the delivery or the cache, not the worker.
MODEL_OPTIONS = frozenset({"ar", "seed", "neg", "steps"})
UNIVERSAL_FLAGS = ("style", "raw", "file", "fresh")

#: Aspect ratio → (width, height), SDXL's trained buckets (multiples of 64,
#: about one megapixel), so any worker that honours width/height gets sizes
#: its model was trained on.
ASPECT_RATIOS: dict[str, tuple[int, int]] = {
    "16:9": (1344, 768),
    "3:2": (1216, 832),
    "4:3": (1152, 896),
    "1:1": (1024, 1024),
    "3:4": (896, 1152),
    "2:3": (832, 1216),
    "9:16": (768, 1344),
}


@dataclass(frozen=True)
class ModelSpec:
    """One configured image model."""

    name: str
    contract: Contract
    url: str
    api_key: SecretStr | None = None
    options: frozenset[str] = field(default_factory=frozenset)
    max_steps: int = 20
    concurrency: int = 1
    #: The first ETA guess before any generation has been timed.
    typical_duration_s: float = 10.0
    #: A model name as people write it in captions.
    label: str = ""
    #: Another model to use while this one's circuit breaker is open.
    fallback: str | None = None
    #: Images a day (UTC) this model may make (its worker's free allocation); ``None``: no budget.
    daily_budget: int | None = None

    @property
    def display_name(self) -> str:
        return self.label or self.name

    def supports(self, flag: str) -> bool:
        return flag in UNIVERSAL_FLAGS or flag in self.options

    def supported_flags(self) -> list[str]:
        """Every flag this model takes, in the order the usage text lists them."""
        order = ("ar", "seed", "neg", "steps", "style", "raw", "file", "fresh")
        return [f"--{name}" for name in order if self.supports(name)]


@dataclass(frozen=True)
class ModelDefaults:
    """Built-in knowledge of a model name: its contract and what its worker honours."""

    contract: Contract
    options: frozenset[str]
    max_steps: int
    typical_duration_s: float
    label: str


#: What we know of the two models of the original design. flux-1-schnell takes
#: steps (max 8) and seed; SDXL also takes a negative prompt and a size.
BUILTIN_MODELS: dict[str, ModelDefaults] = {
    "flux": ModelDefaults(
        contract=Contract.GET,
        options=frozenset({"seed", "steps"}),
        max_steps=8,
        typical_duration_s=10.0,
        label="Flux",
    ),
    "sdxl": ModelDefaults(
        contract=Contract.POST,
        options=frozenset({"ar", "seed", "neg", "steps"}),
        max_steps=20,
        typical_duration_s=12.0,
        label="SDXL",
    ),
}


class ModelRegistry:
    """The models this bot offers, looked up case-insensitively."""

    def __init__(self, models: Iterable[ModelSpec]) -> None:
        self._models: dict[str, ModelSpec] = {}
        for model in models:
            self._models[model.name.lower()] = model

    def get(self, name: str) -> ModelSpec | None:
        return self._models.get(name.lower())

    def names(self) -> list[str]:
        return list(self._models)

    def __iter__(self) -> Iterator[ModelSpec]:
        return iter(self._models.values())

    def __len__(self) -> int:
        return len(self._models)

    def __bool__(self) -> bool:
        return bool(self._models)

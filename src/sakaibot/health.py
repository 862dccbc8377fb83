"""Whether the bot can serve now, for ``/healthz``: Telegram, the store, each model.

The bot can serve when its chat is connected, its store takes writes, and at
least one model is neither paused by its circuit breaker nor until 00:00 UTC
(a half-open breaker serves: its probe is on the way).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from sakaibot.breaker import Breakers, BreakerState
from sakaibot.models import ModelRegistry
from sakaibot.quota import DailyBudgets


@dataclass(frozen=True)
class ModelHealth:
    """One model's breaker and budget as ``/healthz`` shows them."""

    model: str
    breaker: BreakerState
    budget_used: int
    budget_limit: int | None
    #: When a model paused until 00:00 UTC comes back (Unix seconds), else ``None``.
    paused_until_s: float | None

    @property
    def serving(self) -> bool:
        return self.breaker is not BreakerState.OPEN and self.paused_until_s is None


@dataclass(frozen=True)
class Health:
    """The answer of ``/healthz``."""

    telegram_connected: bool
    store_writable: bool
    models: list[ModelHealth]

    @property
    def ok(self) -> bool:
        return (
            self.telegram_connected
            and self.store_writable
            and any(model.serving for model in self.models)
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "telegram_connected": self.telegram_connected,
            "store_writable": self.store_writable,
            "models": {
                m.model: {
                    "serving": m.serving,
                    "breaker": m.breaker.value,
                    "budget_used": m.budget_used,
                    "budget_limit": m.budget_limit,
                    "paused_until_s": m.paused_until_s,
                }
                for m in self.models
            },
        }


@dataclass(frozen=True)
class HealthCheck:
    """What ``/healthz`` asks; each part is handed in by the app factory."""

    connected: Callable[[], bool]
    store_writable: Callable[[], Awaitable[bool]]
    registry: ModelRegistry
    breakers: Breakers
    budgets: DailyBudgets

    async def __call__(self) -> Health:
        models = [
            ModelHealth(
                model=use.model,
                breaker=self.breakers.get(use.model).state,
                budget_used=use.used,
                budget_limit=use.limit,
                paused_until_s=use.paused_until_s,
            )
            for use in self.budgets.uses(self.registry.names())
        ]
        return Health(
            telegram_connected=self.connected(),
            store_writable=await self.store_writable(),
            models=models,
        )

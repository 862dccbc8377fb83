"""Daily image budgets per model, on the wall clock's UTC day.

Cloudflare's free allocation is counted per UTC day and resets at 00:00 UTC.
A model with a daily budget (``FLUX_DAILY_BUDGET``, ``SDXL_DAILY_BUDGET``, an
``IMAGE_MODELS`` entry's ``daily_budget``) makes at most that many images a
day; when they are used up, or the worker answers its quota error (3036), the
model is *paused until the reset*, which is a different thing from the
circuit breaker's short cool-down: nothing is probed, the model simply comes
back at 00:00 UTC.

An image is counted when it is sent to the worker (:meth:`DailyBudgets.take`)
and given back when the worker made none (:meth:`DailyBudgets.give_back`), so
jobs running side by side can never overdraw a budget.

:class:`DailyBudgets` is what the rest of the bot asks of the budgets.
Counting and the quota error are ``async`` (in Redis mode they are one atomic
step in Redis, shared by every front end:
:class:`~sakaibot.shared.budgets.SharedBudgets`); the reads (``paused_until_s``,
``used``, ``uses``) are plain calls, answered from the last view, so admission
keeps checking and queueing a request in one step with nothing awaited between.
:class:`LocalBudgets` is one process's: its day's counts survive a restart
because :func:`used_today` counts them again from the stored jobs. No timers:
the day is worked out from the clock whenever it is asked for.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

from sakaibot.errors import QuotaExhausted
from sakaibot.models import ModelRegistry
from sakaibot.store import JobRecord, StoredJobState

DAY_S = 86_400


def utc_day(now_s: float) -> int:
    """The UTC day ``now_s`` (Unix seconds) falls in, as a day number."""
    return int(now_s // DAY_S)


def next_reset_s(now_s: float) -> float:
    """The next 00:00 UTC after ``now_s``, in Unix seconds."""
    return float((utc_day(now_s) + 1) * DAY_S)


@dataclass(frozen=True)
class BudgetUse:
    """One model's use of its budget today, for statistics and /healthz."""

    model: str
    used: int
    #: ``None``: the model has no budget (only the quota error can pause it).
    limit: int | None
    #: When the model comes back (Unix seconds) while it is paused, else ``None``.
    paused_until_s: float | None

    @property
    def paused(self) -> bool:
        return self.paused_until_s is not None


def made_an_image(record: JobRecord) -> bool:
    """Whether the job had its image made by a worker (not the cache)."""
    if record.cache_hit or record.generating_s is None:
        return False
    return record.state in {StoredJobState.DONE, StoredJobState.DELIVERING, StoredJobState.FAILED}


def used_today(records: Iterable[JobRecord], now_s: float) -> dict[str, int]:
    """Images made by each model's worker since the last 00:00 UTC, from stored jobs.

    An image a fallback made counts against the model asked for (the store
    keeps only that one): the budget errs on the safe side.
    """
    day = utc_day(now_s)
    counts: dict[str, int] = {}
    for record in records:
        if utc_day(record.created_at_s) == day and made_an_image(record):
            counts[record.model] = counts.get(record.model, 0) + 1
    return counts


def quota_hit_today(records: Iterable[JobRecord], now_s: float) -> set[str]:
    """Models whose worker answered its quota error since the last 00:00 UTC."""
    day = utc_day(now_s)
    return {
        r.model
        for r in records
        if r.error_kind == QuotaExhausted.kind and utc_day(r.finished_at_s or r.created_at_s) == day
    }


def budget_limits(registry: ModelRegistry) -> dict[str, int]:
    """Each configured model's daily budget, for the models that have one."""
    return {m.name: m.daily_budget for m in registry if m.daily_budget is not None}


def uses_from_records(
    registry: ModelRegistry, records: Iterable[JobRecord], now_s: float
) -> list[BudgetUse]:
    """Every model's budget use today from stored jobs alone (``sakaibot stats``)."""
    listed = list(records)
    budgets = LocalBudgets(budget_limits(registry), lambda: now_s)
    budgets.load(used_today(listed, now_s), quota_hit_today(listed, now_s))
    return budgets.uses(m.name for m in registry)


class DailyBudgets(Protocol):
    """Every model's images today and whether it is paused until 00:00 UTC.

    The reads answer at once from what is known here; the ``async`` methods
    count, and bring that knowledge up to date (in Redis mode, from every
    front end's counts).
    """

    def limit_of(self, model: str) -> int | None: ...

    def used(self, model: str) -> int: ...

    def paused_until_s(self, model: str) -> float | None:
        """When ``model`` comes back (the next 00:00 UTC) while it is paused, else ``None``."""
        ...

    def uses(self, models: Iterable[str]) -> list[BudgetUse]:
        """Each of ``models``' use today, in the order given."""
        return [
            BudgetUse(
                model=name,
                used=self.used(name),
                limit=self.limit_of(name),
                paused_until_s=self.paused_until_s(name),
            )
            for name in models
        ]

    async def take(self, model: str) -> bool:
        """Count one image about to be made; ``False`` (nothing counted) when paused."""
        ...

    async def give_back(self, model: str) -> None:
        """The worker made no image after :meth:`take`: it does not count."""
        ...

    async def quota_exhausted(self, model: str) -> None:
        """The worker answered its daily-quota error: pause the model until 00:00 UTC."""
        ...

    async def restore(self, used: Mapping[str, int], quota_hit: Iterable[str]) -> None:
        """Bring back today's counts after a restart, from this bot's stored jobs."""
        ...

    async def refresh(self) -> None:
        """Bring the reads up to date (other front ends' counts); never raises."""
        ...


class LocalBudgets(DailyBudgets):
    """The :class:`DailyBudgets` of one process, on its own clock.

    ``limits`` maps a model name to its budget; a model not in it has none.
    ``wall_clock`` gives Unix seconds (the UTC day is the Cloudflare day).
    """

    def __init__(self, limits: Mapping[str, int], wall_clock: Callable[[], float]) -> None:
        self._limits = dict(limits)
        self._wall_clock = wall_clock
        self._day = utc_day(wall_clock())
        self._used: dict[str, int] = {}
        #: Models whose worker said its quota is used up, on ``self._day``.
        self._quota_hit: set[str] = set()

    def _today(self) -> int:
        """The current day; a new one starts every model from nothing."""
        day = utc_day(self._wall_clock())
        if day != self._day:
            self._day = day
            self._used.clear()
            self._quota_hit.clear()
        return day

    def limit_of(self, model: str) -> int | None:
        return self._limits.get(model)

    def used(self, model: str) -> int:
        self._today()
        return self._used.get(model, 0)

    def paused_until_s(self, model: str) -> float | None:
        """When ``model`` comes back (the next 00:00 UTC) while it is paused, else ``None``."""
        self._today()
        limit = self._limits.get(model)
        used_up = limit is not None and self._used.get(model, 0) >= limit
        if used_up or model in self._quota_hit:
            return next_reset_s(self._wall_clock())
        return None

    # Nothing below awaits: a check and its count are one step on the event loop.

    async def take(self, model: str) -> bool:
        """Count one image about to be made; ``False`` (nothing counted) when paused."""
        if self.paused_until_s(model) is not None:
            return False
        self._used[model] = self._used.get(model, 0) + 1
        return True

    async def give_back(self, model: str) -> None:
        """The worker made no image after :meth:`take`: it does not count."""
        self._today()
        if self._used.get(model, 0) > 0:
            self._used[model] -= 1

    async def quota_exhausted(self, model: str) -> None:
        """The worker answered its daily-quota error: pause the model until 00:00 UTC."""
        self._today()
        self._quota_hit.add(model)

    async def restore(self, used: Mapping[str, int], quota_hit: Iterable[str]) -> None:
        """Bring back today's counts after a restart (:func:`used_today`)."""
        self.load(used, quota_hit)

    async def refresh(self) -> None:
        """Nothing to do: every count is made here."""

    def load(self, used: Mapping[str, int], quota_hit: Iterable[str]) -> None:
        """:meth:`restore`, for callers that are not on an event loop."""
        self._today()
        for model, count in used.items():
            self._used[model] = max(self._used.get(model, 0), count)
        self._quota_hit.update(quota_hit)

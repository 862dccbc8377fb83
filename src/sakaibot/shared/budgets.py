"""The daily image budgets of front ends that share one Cloudflare account.

In Redis mode each image is counted in Redis, on the Redis clock's UTC day, by
every front end together (:meth:`~sakaibot.shared.backend.RedisBackend.budget_take`):
two front ends with ``FLUX_DAILY_BUDGET=3`` make three flux images a day in
all, and the quota error one of them hears pauses the model for all of them.

The count is taken where :class:`~sakaibot.quota.LocalBudgets` takes it: by the
front end, as it hands the image over to the shared queue (the workers only
carry jobs already counted), and given back when the answer brings no image.
Every step also brings back every model's counts, which the plain reads
(``paused_until_s``, ``used``) answer from until the next step.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from sakaibot.errors import StoreUnavailable
from sakaibot.quota import DailyBudgets, next_reset_s
from sakaibot.shared.interfaces import BudgetDay, SharedBudgetStore
from sakaibot.shared.outage import OutageLog


class SharedBudgets(DailyBudgets):
    """The :class:`~sakaibot.quota.DailyBudgets` of every front end on one Redis.

    ``limits`` maps a model to its budget (a model not in it has none);
    ``models`` are the models whose counts are read with every step;
    ``wall_clock`` (Unix seconds) only tells when the last view is from a day
    that is over, so it is not answered from any more.

    While Redis is unreachable an image is let through uncounted (the hand-over
    to the shared queue waits for Redis anyway) unless the last view says the
    model is paused; the reads keep answering from the last view.
    """

    def __init__(
        self,
        store: SharedBudgetStore,
        limits: Mapping[str, int],
        models: Iterable[str],
        wall_clock: Callable[[], float],
        *,
        outage: OutageLog,
    ) -> None:
        self._store = store
        self._limits = dict(limits)
        self._models = list(models)
        self._wall_clock = wall_clock
        self._outage = outage
        self._view: BudgetDay | None = None
        #: Quota errors heard here that Redis could not be told of: until the reset.
        self._unshared_quota: dict[str, float] = {}

    def _watched(self, model: str) -> list[str]:
        """The target first, then every other model (their counts come along)."""
        return [model, *(name for name in self._models if name != model)]

    def _current(self) -> BudgetDay | None:
        view = self._view
        if view is None or self._wall_clock() >= view.reset_at_s:
            return None  # a day that is over: everything starts from nothing
        return view

    def _count(self, model: str) -> tuple[int, bool]:
        view = self._current()
        if view is None:
            return 0, False
        return view.counts.get(model, (0, False))

    def limit_of(self, model: str) -> int | None:
        return self._limits.get(model)

    def used(self, model: str) -> int:
        return self._count(model)[0]

    def paused_until_s(self, model: str) -> float | None:
        unshared_until_s = self._unshared_quota.get(model)
        if unshared_until_s is not None and self._wall_clock() < unshared_until_s:
            return unshared_until_s
        view = self._current()
        if view is None:
            return None
        used, quota_hit = view.counts.get(model, (0, False))
        limit = self._limits.get(model)
        if quota_hit or (limit is not None and used >= limit):
            return view.reset_at_s
        return None

    async def take(self, model: str) -> bool:
        try:
            day = await self._store.budget_take(self._watched(model), self._limits.get(model))
        except StoreUnavailable as exc:
            self._outage.warn("shared budgets unreachable; %s not counted: %s", model, exc)
            return self.paused_until_s(model) is None
        self._view = day
        return day.done

    async def give_back(self, model: str) -> None:
        try:
            self._view = await self._store.budget_give_back(self._watched(model))
        except StoreUnavailable as exc:
            self._outage.warn("shared budgets unreachable; %s not given back: %s", model, exc)

    async def quota_exhausted(self, model: str) -> None:
        try:
            self._view = await self._store.budget_quota_hit(self._watched(model))
        except StoreUnavailable as exc:
            # Paused here at least: this front end heard the error itself.
            self._unshared_quota[model] = next_reset_s(self._wall_clock())
            self._outage.warn(
                "shared budgets unreachable; %s's quota error not shared: %s", model, exc
            )

    async def restore(self, used: Mapping[str, int], quota_hit: Iterable[str]) -> None:
        """Redis already holds every front end's counts; this front end's stored ones
        are a floor of them, written back only where Redis has less (it restarted empty)."""
        try:
            for model, count in used.items():
                if count > 0:
                    self._view = await self._store.budget_restore(self._watched(model), count)
            for model in quota_hit:
                self._view = await self._store.budget_quota_hit(self._watched(model))
        except StoreUnavailable as exc:
            self._outage.warn("shared budgets unreachable; today's counts not restored: %s", exc)
        await self.refresh()

    async def load(self) -> None:
        """:meth:`refresh`, raising :class:`StoreUnavailable` when Redis cannot say."""
        self._view = await self._store.budget_read(self._models)

    async def refresh(self) -> None:
        try:
            await self.load()
        except StoreUnavailable as exc:
            self._outage.warn("shared budgets unreachable; showing the last counts: %s", exc)

"""What Redis mode's parts ask of the shared store, as Protocols.

:class:`~sakaibot.shared.backend.RedisBackend` implements all of them; the
generator, the worker, the allowance and the cache are written against these,
so they are tested with a real Redis or with small fakes alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from sakaibot.limits import Denial, RateWindow


@dataclass(frozen=True)
class Taken:
    """A job a worker took from a model's queue, and holds until it answers."""

    #: The stream entry: the handle for keeping and answering the job.
    entry_id: str
    job_id: str
    payload: str
    #: How many times the job has been given to a worker, this time included.
    deliveries: int


@dataclass(frozen=True)
class Answer:
    """A worker's answer, on its way to the front end that asked."""

    entry_id: str
    job_id: str
    result_json: str
    image: bytes | None


class FrontEndQueue(Protocol):
    """A front end's side of the shared queues."""

    @property
    def longest_block_s(self) -> float: ...

    async def enqueue(
        self,
        model: str,
        job_id: str,
        payload: str,
        *,
        user_id: str,
        frontend_id: str,
        max_waiting: int,
        max_pending: int,
        model_label: str | None = None,
    ) -> int: ...

    async def position(self, model: str, job_id: str) -> int | None: ...

    async def cancel(self, model: str, job_id: str, frontend_id: str) -> bool: ...

    async def open_answers(self, frontend_id: str) -> None: ...

    async def next_answers(self, frontend_id: str, *, block_s: float) -> list[Answer]: ...

    async def unacked_answers(self, frontend_id: str) -> list[Answer]: ...

    async def ack_answer(self, frontend_id: str, answer: Answer) -> None: ...


class WorkerQueue(Protocol):
    """A generation worker's side of the shared queues."""

    async def take(
        self, model: str, worker_id: str, *, lease_s: float, block_s: float
    ) -> Taken | None: ...

    async def keep(self, model: str, worker_id: str, entry_id: str) -> bool: ...

    async def answer(
        self,
        model: str,
        worker_id: str,
        taken: Taken,
        frontend_id: str,
        result_json: str,
        image: bytes | None,
    ) -> bool: ...


class SharedLimits(Protocol):
    """Rate windows kept where every front end sees them, on one clock."""

    async def admit(
        self, user_id: str, windows: list[RateWindow], count: int = 1
    ) -> Denial | float: ...

    async def refund(self, user_id: str, stamp: float) -> bool: ...


@dataclass(frozen=True)
class BudgetDay:
    """The daily budgets' counts on the Redis clock's current UTC day, after one step."""

    #: The next 00:00 UTC by the Redis clock, in Unix seconds: when the counts reset.
    reset_at_s: float
    #: What the step did: for a take, whether the image was counted.
    done: bool
    #: Each model asked about: images counted today, and whether its worker
    #: answered the daily-quota error today.
    counts: dict[str, tuple[int, bool]]


class SharedBudgetStore(Protocol):
    """Every model's images today, counted for every front end together.

    Each call is one atomic step that also reads the counts of ``models``
    (the target first), so one round trip both counts and refreshes.
    """

    async def budget_take(self, models: list[str], limit: int | None) -> BudgetDay: ...

    async def budget_give_back(self, models: list[str]) -> BudgetDay: ...

    async def budget_quota_hit(self, models: list[str]) -> BudgetDay: ...

    async def budget_restore(self, models: list[str], used: int) -> BudgetDay: ...

    async def budget_read(self, models: list[str]) -> BudgetDay: ...


class SharedCacheStore(Protocol):
    """A result cache every front end sees, capped in bytes."""

    async def cache_get(self, key: str) -> tuple[str, bytes] | None: ...

    async def cache_put(self, key: str, entry_json: str, image: bytes, ttl_s: float) -> bool: ...

    async def cache_clear(self) -> int: ...

    async def cache_count(self) -> int: ...

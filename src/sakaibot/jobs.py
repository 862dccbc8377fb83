"""The job record: one accepted ``/image=`` request, from queued to delivered or failed."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

from sakaibot.commands import ImageRequest
from sakaibot.models import ModelSpec


class JobState(StrEnum):
    QUEUED = "queued"
    ENHANCING = "enhancing"
    GENERATING = "generating"
    SENDING = "sending"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in {JobState.DONE, JobState.FAILED, JobState.CANCELLED}


#: Which state may follow which; anything else is a bug, not a user error.
_NEXT_STATES: dict[JobState, frozenset[JobState]] = {
    JobState.QUEUED: frozenset({JobState.ENHANCING, JobState.GENERATING, JobState.CANCELLED}),
    JobState.ENHANCING: frozenset({JobState.GENERATING, JobState.FAILED}),
    JobState.GENERATING: frozenset({JobState.SENDING, JobState.FAILED}),
    JobState.SENDING: frozenset({JobState.DONE, JobState.FAILED}),
    JobState.DONE: frozenset(),
    JobState.FAILED: frozenset(),
    JobState.CANCELLED: frozenset(),
}


@dataclass(eq=False)
class Job:
    """One accepted request. Compared by identity; ``id`` is what users type."""

    id: str
    user_id: str
    chat_id: str
    #: The message id of the command this job answers.
    reply_to: int
    request: ImageRequest
    model: ModelSpec
    created_at_s: float
    #: The limiter stamp to refund if the job fails through no fault of the user.
    limiter_stamp: float | None = None
    state: JobState = JobState.QUEUED
    started_at_s: float | None = None
    finished_at_s: float | None = None
    error_kind: str | None = None
    #: Timings of each step in seconds, for the caption and (later) statistics.
    timings_s: dict[str, float] = field(default_factory=dict)

    def advance(self, state: JobState) -> None:
        if state not in _NEXT_STATES[self.state]:
            raise ValueError(f"job {self.id}: {self.state} cannot become {state}")
        self.state = state


def random_job_id() -> str:
    """Six hex digits: short to type in ``/image cancel``, unlikely to collide."""
    return secrets.token_hex(3)


JobIdFactory = Callable[[], str]

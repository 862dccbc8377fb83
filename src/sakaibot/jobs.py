"""The job record: one accepted ``/image=`` request, from queued to delivered or failed."""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

from sakaibot.commands import MAX_SEED, ImageOptions, ImageRequest, Style
from sakaibot.i18n import ENGLISH, Texts
from sakaibot.models import ModelSpec
from sakaibot.store import JobRecord


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
    # QUEUED → SENDING: a cache hit, or an image kept from before a restart.
    JobState.QUEUED: frozenset(
        {JobState.ENHANCING, JobState.GENERATING, JobState.SENDING, JobState.CANCELLED}
    ),
    # ENHANCING/GENERATING → CANCELLED: /image cancel by the owner; once the
    # image is being sent, it is too late.
    JobState.ENHANCING: frozenset({JobState.GENERATING, JobState.FAILED, JobState.CANCELLED}),
    JobState.GENERATING: frozenset({JobState.SENDING, JobState.FAILED, JobState.CANCELLED}),
    JobState.SENDING: frozenset({JobState.DONE, JobState.FAILED}),
    JobState.DONE: frozenset(),
    JobState.FAILED: frozenset(),
    JobState.CANCELLED: frozenset(),
}


@dataclass(eq=False)
class Album:
    """The images of one ``--n`` request: each its own job, delivered together.

    Shared by its jobs; it counts what the request's one status message says
    ("2 of 4 ready…").
    """

    #: The request's tag (``#id`` in the album's caption), like a job id.
    id: str
    size: int
    #: Where the album goes and whose it is (also when none of its images is made).
    chat_id: str
    reply_to: int
    user_id: str
    model: str
    #: Images made (held for the album) and images that could not be made.
    made: int = 0
    failed: int = 0
    #: Which images (by index) have ended, made or failed.
    ended: set[int] = field(default_factory=set)
    #: The newest status text of each image still on its way, by index (a
    #: function when it is to be written only when sent, as a queue position).
    statuses: dict[int, str | Callable[[], str]] = field(default_factory=dict)
    #: The language its chat is answered in, chosen when it was accepted (as its jobs').
    texts: Texts = ENGLISH


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
    #: Timings of each step in seconds, for the caption and statistics.
    timings_s: dict[str, float] = field(default_factory=dict)
    #: Resolved once the job is in the store: ``True`` stored, ``False`` refused.
    #: ``None`` for a job read back from the store on start.
    persisted: asyncio.Future[bool] | None = None
    #: The front end's address of the chat (:attr:`IncomingMessage.chat_address`).
    chat_address: str | None = None
    #: The album this job is one image of (``--n``), and which one (from 0).
    album: Album | None = None
    album_index: int = 0
    #: The language its chat is answered in (``/image lang``), chosen when it was accepted.
    texts: Texts = ENGLISH
    #: Its prompt is being improved while it waits (see :mod:`sakaibot.enhance_ahead`).
    improving: bool = False

    @property
    def status_key(self) -> str:
        """The status message this job shows in: its own, or its album's."""
        return self.album.id if self.album is not None else self.id

    @property
    def stored(self) -> bool:
        """Whether the job may be announced and run: it is safe in the store."""
        return self.persisted is None or (
            self.persisted.done() and not self.persisted.cancelled() and self.persisted.result()
        )

    def advance(self, state: JobState) -> None:
        if state not in _NEXT_STATES[self.state]:
            raise ValueError(f"job {self.id}: {self.state} cannot become {state}")
        self.state = state


def encode_request(request: ImageRequest) -> str:
    """The request as JSON, to keep in the store and run again after a restart."""
    # vars() rather than dataclasses.asdict(): the fields are plain values, and
    # asdict's deep copy is measurable on the path every job takes.
    data = dict(vars(request))
    data["options"] = dict(vars(request.options))
    return json.dumps(data, ensure_ascii=False)


def decode_request(text: str) -> ImageRequest:
    data = json.loads(text)
    options = dict(data["options"])
    if options.get("style") is not None:
        options["style"] = Style(options["style"])
    known = ImageOptions.__dataclass_fields__
    return ImageRequest(
        model=data["model"],
        prompt=data["prompt"],
        options=ImageOptions(**{k: v for k, v in options.items() if k in known}),
        steps_requested=data.get("steps_requested"),
        count=data.get("count", 1),
    )


def job_record(job: Job) -> JobRecord:
    """What the store keeps of a newly accepted job."""
    return JobRecord(
        id=job.id,
        user_id=job.user_id,
        chat_id=job.chat_id,
        reply_to=job.reply_to,
        model=job.model.name,
        request_json=encode_request(job.request),
        prompt=job.request.prompt,
        # The rate-limit stamp is wall-clock time: it is also when the job was accepted.
        created_at_s=job.limiter_stamp if job.limiter_stamp is not None else 0.0,
        chat_address=job.chat_address,
        album_id=job.album.id if job.album is not None else None,
        album_index=job.album_index if job.album is not None else None,
        album_size=job.album.size if job.album is not None else None,
    )


def random_seed() -> int:
    """A seed for one image of an album: named in its caption, so it can be repeated."""
    return secrets.randbelow(MAX_SEED + 1)


def random_job_id() -> str:
    """Six hex digits: short to type in ``/image cancel``, unlikely to collide."""
    return secrets.token_hex(3)


JobIdFactory = Callable[[], str]

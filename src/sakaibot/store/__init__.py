"""What SakaiBot keeps across restarts: job records, rate windows, the result cache,
each chat's default flags.

This module is the interface the core uses; :mod:`sakaibot.store.sqlite` is the
embedded default behind it. Image bytes are not kept in the database but in a
content-addressed folder (:mod:`sakaibot.store.images`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


class StoredJobState:
    """The states a job record can be in (strings, as stored).

    Coarser than the in-memory :class:`sakaibot.jobs.JobState`: the store only
    needs what a restart must know (waiting, being sent, or ended how).
    """

    QUEUED = "queued"
    #: The image exists and is being sent: on a restart, ask the chat before sending again.
    DELIVERING = "delivering"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"

    UNFINISHED = (QUEUED, DELIVERING)


@dataclass
class JobRecord:
    """One accepted job, as kept for recovery, history and statistics."""

    id: str
    user_id: str
    chat_id: str
    reply_to: int
    model: str
    #: The request as JSON (prompt, options), enough to run it again.
    request_json: str
    prompt: str
    created_at_s: float  # wall-clock time; also the rate-limit stamp
    state: str = StoredJobState.QUEUED
    refunded: bool = False
    status_message_id: int | None = None
    prompt_used: str | None = None
    enhancer: str | None = None
    error_kind: str | None = None
    error: str | None = None
    waited_s: float | None = None
    enhancing_s: float | None = None
    generating_s: float | None = None
    uploading_s: float | None = None
    image_bytes: int | None = None
    image_hash: str | None = None
    image_ext: str | None = None
    cache_hit: bool = False
    delivered_message_id: int | None = None
    finished_at_s: float | None = None
    #: How the front end reaches the chat again after a restart (opaque to the core).
    chat_address: str | None = None
    #: For one image of a ``--n`` request: its album's id, place (from 0) and size.
    album_id: str | None = None
    album_index: int | None = None
    album_size: int | None = None
    #: The order jobs were accepted in, assigned by the store.
    seq: int = 0


def ended(state: str, *, at_s: float, refunded: bool, kind: str, message: str) -> dict[str, object]:
    """The fields that record how a job ended without an image (for ``update_job``)."""
    return {
        "state": state,
        "refunded": refunded,
        "error_kind": kind,
        "error": message,
        "finished_at_s": at_s,
    }


@dataclass
class CacheEntry:
    """A stored result: the same request again is answered with this image."""

    key: str
    model: str
    image_hash: str
    image_ext: str
    mime_type: str
    width: int
    height: int
    prompt_used: str
    enhancer: str
    created_at_s: float
    last_used_at_s: float
    hits: int = 0
    #: An opaque reference the chat gave for the uploaded file, to reuse it.
    upload_ref: str | None = None


class Store(Protocol):
    """The durable state of one bot. Every call is safe to await from the event loop."""

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def add_job(self, record: JobRecord) -> None: ...

    async def add_jobs(self, records: list[JobRecord]) -> None:
        """Add several jobs (one album's) at once: all of them are stored, or none."""
        ...

    async def update_job(self, job_id: str, **fields: object) -> None: ...

    async def update_job_grouped(self, job_id: str, **fields: object) -> None:
        """Update, and wait until written, in the next group commit (a moment later at most)."""
        ...

    def update_job_soon(self, job_id: str, **fields: object) -> None:
        """Queue an update without waiting (updates keep their order)."""
        ...

    async def get_job(self, job_id: str) -> JobRecord | None: ...

    async def job_by_delivered_message(self, chat_id: str, message_id: int) -> JobRecord | None:
        """The job whose image is the message ``message_id`` of ``chat_id`` (a reply's target)."""
        ...

    async def unfinished_jobs(self) -> list[JobRecord]: ...

    async def album_jobs(self, album_id: str) -> list[JobRecord]:
        """Every image job of one album, finished or not, in album order."""
        ...

    async def accepted_since(self, since_s: float) -> list[tuple[str, float]]:
        """``(user_id, created_at_s)`` of jobs accepted since then and not refunded."""
        ...

    async def history(self, user_id: str, limit: int) -> list[JobRecord]: ...

    async def jobs_since(self, since_s: float) -> list[JobRecord]: ...

    async def prune_jobs(self, before_s: float) -> int: ...

    async def cache_get(self, key: str) -> CacheEntry | None: ...

    async def cache_put(self, entry: CacheEntry) -> None: ...

    async def cache_touch(
        self, key: str, at_s: float, *, upload_ref: str | None, hit: bool = True
    ) -> None:
        """Note a use (``hit`` counts it) and, when given, the chat's upload reference."""
        ...

    async def cache_entries(self) -> list[CacheEntry]: ...

    async def cache_delete(self, keys: list[str]) -> None: ...

    async def image_hashes_in_use(self) -> set[str]:
        """Images an unfinished job still needs (never evicted)."""
        ...

    async def chat_settings(self, name: str) -> dict[str, str]:
        """Every chat's value of setting ``name`` (``language``), by chat id."""
        ...

    async def set_chat_setting(self, chat_id: str, name: str, value: str) -> None:
        """Keep ``chat_id``'s value of ``name``, replacing the one before."""
        ...

    async def chat_defaults(self, chat_id: str) -> dict[str, str]:
        """A chat's default flags (``/image set``): flag name → value."""
        ...

    async def set_chat_default(self, chat_id: str, name: str, value: str | None) -> None:
        """Set one default of a chat; ``None`` removes it."""
        ...

    async def clear_chat_defaults(self, chat_id: str) -> int:
        """Remove every default of a chat; how many there were."""
        ...

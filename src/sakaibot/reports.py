"""What ``/image history``, ``/image stats`` and ``sakaibot history|stats`` show.

Pure functions over :class:`~sakaibot.store.JobRecord` lists: no I/O, no event
loop, no clock (the caller passes ``now_s``). The chat handlers and the command
line read the records from the store and format them here, so both say the
same thing in the same words; the ``*_to_json`` functions give the same facts
as plain JSON types for ``--json``.
"""

from __future__ import annotations

import math
import statistics
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from sakaibot.commands import EXAMPLE_PROMPT
from sakaibot.enhancer import ORIGINAL_PROMPT
from sakaibot.errors import (
    ChatError,
    ContentFiltered,
    DeliveryFailed,
    EnhancerError,
    FloodWait,
    GenerationError,
    ImageTooLarge,
    InvalidImage,
    PausedUntilReset,
    PermanentWorkerError,
    QuotaExhausted,
    SakaiBotError,
    StoreUnavailable,
    TelegramUnreachable,
    TransientWorkerError,
    WorkerAuthError,
    WorkerBadRequest,
    WorkerTimeout,
    format_wait,
)
from sakaibot.i18n import ENGLISH, N_, Texts
from sakaibot.quota import BudgetUse
from sakaibot.store import JobRecord, StoredJobState

#: How much of a prompt one history line shows.
PROMPT_PREVIEW_CHARS = 60

_EMPTY_HISTORY = N_("You have no images yet. Start with /image=flux={prompt}")
EMPTY_HISTORY = ENGLISH.gettext(_EMPTY_HISTORY, prompt=EXAMPLE_PROMPT)
HISTORY_FOOTER = N_("Send one again: /image resend <id> · Make a new one: /image again <id>")
#: What ``format_stats`` says when no queue lengths were passed (the command line).
NO_QUEUES = N_("(only shown in chat)")

_UNFINISHED_WORDS = {
    StoredJobState.QUEUED: N_("waiting"),
    StoredJobState.DELIVERING: N_("sending"),
}
#: How a history line says why a job failed: words for people, not the stored
#: ``error_kind`` codes. A kind not listed here (a newer or older one) says "failed".
_FAILURE_WORDS = {
    SakaiBotError.kind: N_("failed (a fault in the bot)"),
    GenerationError.kind: N_("failed (the worker could not make it)"),
    TransientWorkerError.kind: N_("failed (the worker was unreachable)"),
    WorkerTimeout.kind: N_("failed (the worker took too long)"),
    PermanentWorkerError.kind: N_("failed (the worker refused)"),
    WorkerAuthError.kind: N_("failed (the worker refused the bot's key)"),
    WorkerBadRequest.kind: N_("failed (the worker refused the request)"),
    ContentFiltered.kind: N_("blocked by the content filter"),
    QuotaExhausted.kind: N_("failed (the worker's quota is used up)"),
    PausedUntilReset.kind: N_("failed (the model's images for today were used up)"),
    InvalidImage.kind: N_("failed (the worker sent no valid image)"),
    ImageTooLarge.kind: N_("failed (the image was too large)"),
    EnhancerError.kind: N_("failed (the prompt enhancer)"),
    StoreUnavailable.kind: N_("failed (storage unavailable)"),
    ChatError.kind: N_("made but not sent"),
    FloodWait.kind: N_("made but not sent"),
    TelegramUnreachable.kind: N_("made but not sent"),
    "model_gone": N_("failed (the model is no longer offered)"),
}


# -- history ---------------------------------------------------------------------


def _preview(prompt: str, limit: int = PROMPT_PREVIEW_CHARS) -> str:
    """The prompt on one line, cut to ``limit`` characters with an ellipsis."""
    text = " ".join(prompt.split())
    if len(text) <= limit:
        return text
    return text[: limit - 1].rstrip() + "…"


def state_word(record: JobRecord, texts: Texts = ENGLISH) -> str:
    """``delivered``, ``delivered (cache)``, ``failed (…)``, ``cancelled``, ``waiting``…

    A job whose image was made but not sent names the ``/image retry`` that may
    still send it (the image is kept for a while); once a retry has delivered
    it, the job reads ``delivered`` like any other.
    """
    _ = texts.gettext
    if record.state == StoredJobState.DONE:
        return _("delivered (cache)") if record.cache_hit else _("delivered")
    if record.state == StoredJobState.FAILED:
        if record.error_kind == DeliveryFailed.kind:
            return _("made but not sent (try /image retry {job_id})", job_id=record.id)
        return _(_FAILURE_WORDS.get(record.error_kind or "", N_("failed")))
    if record.state == StoredJobState.CANCELLED:
        return _("cancelled")
    word = _UNFINISHED_WORDS.get(record.state)
    return record.state if word is None else _(word)


def format_history(
    records: list[JobRecord], *, now_s: float, owner_view: bool = False, texts: Texts = ENGLISH
) -> str:
    """The text of ``/image history``: ``records`` newest first, as the store gives them.

    ``owner_view`` is for ``sakaibot history`` on the command line: the lines
    name each job's user, and the chat-only footer is left out.
    """
    _ = texts.gettext
    if not records:
        return _("No images yet.") if owner_view else _(_EMPTY_HISTORY, prompt=EXAMPLE_PROMPT)
    count = len(records)
    if owner_view:
        lines = [texts.ngettext("Last {count} image:", "Last {count} images:", count)]
    else:
        lines = [texts.ngettext("Your last {count} image:", "Your last {count} images:", count)]
    for record in records:
        who = f" @{record.user_id}" if owner_view else ""
        lines.append(
            _(
                "• {job_id}{who} {model} {age} ago: {state} — {prompt}",
                job_id=record.id,
                who=who,
                model=record.model,
                age=format_wait(now_s - record.created_at_s, texts),
                state=state_word(record, texts),
                prompt=_preview(record.prompt),
            )
        )
    if not owner_view:
        lines.append(_(HISTORY_FOOTER))
    return "\n".join(lines)


def _duration_s(record: JobRecord) -> float | None:
    if record.finished_at_s is None:
        return None
    return record.finished_at_s - record.created_at_s


def history_to_json(records: list[JobRecord]) -> list[dict[str, Any]]:
    """The records for ``--json``, in the order given; ``total_s`` is created → finished."""
    return [
        {
            "id": r.id,
            "user_id": r.user_id,
            "chat_id": r.chat_id,
            "model": r.model,
            "state": r.state,
            "prompt": r.prompt,
            "prompt_used": r.prompt_used,
            "enhancer": r.enhancer,
            "cache_hit": r.cache_hit,
            "refunded": r.refunded,
            "error_kind": r.error_kind,
            "error": r.error,
            "created_at_s": r.created_at_s,
            "finished_at_s": r.finished_at_s,
            "total_s": _duration_s(r),
            "waited_s": r.waited_s,
            "enhancing_s": r.enhancing_s,
            "generating_s": r.generating_s,
            "uploading_s": r.uploading_s,
            "image_bytes": r.image_bytes,
        }
        for r in records
    ]


# -- statistics ------------------------------------------------------------------


def nearest_rank(sorted_values: list[float], percent: float) -> float:
    """The nearest-rank percentile: the smallest value with ``percent`` % of values ≤ it.

    ``sorted_values`` must be sorted and not empty. For 20 values the 95th
    percentile is the 19th smallest; for fewer than 20 it is the largest.
    """
    rank = max(1, math.ceil(percent / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


@dataclass(frozen=True)
class ModelTimes:
    """How long one model's delivered jobs took, from accepted to finished."""

    model: str
    count: int
    #: The usual median (the mean of the two middle values for an even count).
    median_s: float
    #: The 95th percentile by nearest rank (:func:`nearest_rank`).
    p95_s: float


@dataclass(frozen=True)
class Stats:
    """Usage over the last ``days`` days, as :func:`compute_stats` counts it."""

    days: int
    #: Every job accepted in the period, unfinished ones included.
    jobs: int
    done: int
    failed: int
    cancelled: int
    #: ``done / (done + failed)``; cancelled and unfinished jobs do not count. None if 0/0.
    success_rate: float | None
    #: One entry per model with a timed delivered job, by model name.
    per_model: list[ModelTimes]
    #: Delivered jobs answered from the result cache.
    cache_hits: int
    #: ``cache_hits / done``; None when nothing was delivered.
    cache_hit_rate: float | None
    #: Delivered jobs whose prompt an LLM rewrote.
    enhanced: int
    #: The fraction of delivered jobs whose enhancer is ``"original prompt"``,
    #: whatever the reason (no LLM configured, the LLM failed, ``--raw``, a
    #: cache hit of such a result); None when nothing was delivered.
    enhancer_fallback_rate: float | None
    #: Failed jobs by ``error_kind`` ("unknown" when missing), most frequent first.
    errors_by_kind: dict[str, int]
    #: ``(model, waiting, running)`` now, as the caller passed it; empty if unknown.
    queue: list[tuple[str, int, int]] = field(default_factory=list)
    #: Each model's daily budget use today (UTC), as the caller passed it.
    budgets: list[BudgetUse] = field(default_factory=list)


def _rate(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def compute_stats(
    records: list[JobRecord],
    *,
    days: int,
    queue: list[tuple[str, int, int]],
    budgets: list[BudgetUse] | None = None,
) -> Stats:
    """Count ``records`` (the jobs of the last ``days`` days, e.g. ``store.jobs_since``).

    Times are ``finished_at_s - created_at_s`` of delivered jobs (queue wait,
    enhancing, generating and uploading together; cache hits included).
    """
    done = [r for r in records if r.state == StoredJobState.DONE]
    failed = [r for r in records if r.state == StoredJobState.FAILED]
    cancelled = sum(1 for r in records if r.state == StoredJobState.CANCELLED)

    times: dict[str, list[float]] = {}
    for record in done:
        duration = _duration_s(record)
        if duration is not None:
            times.setdefault(record.model, []).append(duration)
    per_model = []
    for model in sorted(times):
        values = sorted(times[model])
        per_model.append(
            ModelTimes(
                model=model,
                count=len(values),
                median_s=statistics.median(values),
                p95_s=nearest_rank(values, 95),
            )
        )

    cache_hits = sum(1 for r in done if r.cache_hit)
    enhanced = sum(1 for r in done if r.enhancer is not None and r.enhancer != ORIGINAL_PROMPT)
    fallbacks = sum(1 for r in done if r.enhancer == ORIGINAL_PROMPT)
    kinds = Counter(r.error_kind or "unknown" for r in failed)
    errors_by_kind = dict(sorted(kinds.items(), key=lambda item: (-item[1], item[0])))

    return Stats(
        days=days,
        jobs=len(records),
        done=len(done),
        failed=len(failed),
        cancelled=cancelled,
        success_rate=_rate(len(done), len(done) + len(failed)),
        per_model=per_model,
        cache_hits=cache_hits,
        cache_hit_rate=_rate(cache_hits, len(done)),
        enhanced=enhanced,
        enhancer_fallback_rate=_rate(fallbacks, len(done)),
        errors_by_kind=errors_by_kind,
        queue=list(queue),
        budgets=list(budgets or []),
    )


def _percent(rate: float | None) -> str:
    return "–" if rate is None else f"{rate * 100:.0f}%"


def format_stats(stats: Stats, texts: Texts = ENGLISH) -> str:
    """The text of ``/image stats``: a short block, one fact per line.

    Error kinds stay the stored codes (``worker_timeout``): they are for the owner to look up.
    """
    _ = texts.gettext
    unfinished = stats.jobs - stats.done - stats.failed - stats.cancelled
    period = texts.ngettext("the last day", "the last {count} days", stats.days)
    counts = {"jobs": stats.jobs, "done": stats.done, "failed": stats.failed}
    if unfinished:
        jobs = _(
            "Jobs in {period}: {jobs} ({done} delivered, {failed} failed, {cancelled} cancelled, "
            "{unfinished} unfinished)",
            period=period,
            cancelled=stats.cancelled,
            unfinished=unfinished,
            **counts,
        )
    else:
        jobs = _(
            "Jobs in {period}: {jobs} ({done} delivered, {failed} failed, {cancelled} cancelled)",
            period=period,
            cancelled=stats.cancelled,
            **counts,
        )
    lines = [jobs]
    if stats.success_rate is None:
        lines.append(_("Success rate: – (nothing finished)"))
    else:
        lines.append(
            _(
                "Success rate: {rate} ({done} of {finished})",
                rate=_percent(stats.success_rate),
                done=stats.done,
                finished=stats.done + stats.failed,
            )
        )
    if stats.per_model:
        lines.append(_("Time to image (median / p95):"))
        lines.extend(
            _(
                "  {model}: {median_s:.1f} s / {p95_s:.1f} s ({images})",
                model=t.model,
                median_s=t.median_s,
                p95_s=t.p95_s,
                images=texts.ngettext("{count} image", "{count} images", t.count),
            )
            for t in stats.per_model
        )
    else:
        lines.append(_("Time to image: – (nothing delivered)"))
    if stats.queue:
        queues = "; ".join(
            _(
                "{model} {waiting} waiting, {running} running",
                model=model,
                waiting=waiting,
                running=running,
            )
            for model, waiting, running in stats.queue
        )
        lines.append(_("Queues now: {queues}", queues=queues))
    else:
        lines.append(_("Queues now: {queues}", queues=_(NO_QUEUES)))
    if stats.cache_hit_rate is None:
        lines.append(_("Cache hits: –"))
    else:
        lines.append(
            _(
                "Cache hits: {rate} ({hits} of {done})",
                rate=_percent(stats.cache_hit_rate),
                hits=stats.cache_hits,
                done=stats.done,
            )
        )
    lines.append(
        _(
            "Prompts enhanced: {enhanced}; original prompt used: {rate} of delivered",
            enhanced=stats.enhanced,
            rate=_percent(stats.enhancer_fallback_rate),
        )
    )
    if stats.budgets:
        used = "; ".join(_budget_words(use, texts) for use in stats.budgets)
        lines.append(_("Used today (UTC): {used}", used=used))
    if stats.errors_by_kind:
        errors = ", ".join(f"{kind} {count}" for kind, count in stats.errors_by_kind.items())
        lines.append(_("Errors: {errors}", errors=errors))
    else:
        lines.append(_("Errors: none"))
    return "\n".join(lines)


def _budget_words(use: BudgetUse, texts: Texts) -> str:
    """``flux 12 of 100``, ``sdxl 3 (no budget)``, ``… (paused until 00:00 UTC)``."""
    if not use.limit:
        if use.paused:
            return texts.gettext(
                "{model} {used} (paused until 00:00 UTC)", model=use.model, used=use.used
            )
        return texts.gettext("{model} {used} (no budget)", model=use.model, used=use.used)
    if use.paused:
        return texts.gettext(
            "{model} {used} of {limit} (paused until 00:00 UTC)",
            model=use.model,
            used=use.used,
            limit=use.limit,
        )
    return texts.gettext(
        "{model} {used} of {limit}", model=use.model, used=use.used, limit=use.limit
    )


def stats_to_json(stats: Stats) -> dict[str, Any]:
    """The statistics for ``--json`` (rates as fractions 0–1, or null)."""
    return {
        "days": stats.days,
        "jobs": stats.jobs,
        "done": stats.done,
        "failed": stats.failed,
        "cancelled": stats.cancelled,
        "success_rate": stats.success_rate,
        "per_model": [
            {"model": t.model, "count": t.count, "median_s": t.median_s, "p95_s": t.p95_s}
            for t in stats.per_model
        ],
        "cache_hits": stats.cache_hits,
        "cache_hit_rate": stats.cache_hit_rate,
        "enhanced": stats.enhanced,
        "enhancer_fallback_rate": stats.enhancer_fallback_rate,
        "errors_by_kind": dict(stats.errors_by_kind),
        "queue": [
            {"model": model, "waiting": waiting, "running": running}
            for model, waiting, running in stats.queue
        ],
        "budgets": [
            {
                "model": use.model,
                "used": use.used,
                "limit": use.limit,
                "paused_until_s": use.paused_until_s,
            }
            for use in stats.budgets
        ],
    }

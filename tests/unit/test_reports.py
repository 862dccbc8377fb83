"""reports.py: history lines, statistics and their JSON, on hand-built job records."""

from __future__ import annotations

import json

import pytest

from sakaibot.reports import (
    EMPTY_HISTORY,
    HISTORY_FOOTER,
    ModelTimes,
    compute_stats,
    format_history,
    format_stats,
    history_to_json,
    nearest_rank,
    stats_to_json,
)
from sakaibot.store import JobRecord, StoredJobState

NOW = 1_000_000.0


def job(
    job_id: str,
    *,
    model: str = "flux",
    state: str = StoredJobState.DONE,
    took_s: float | None = 10.0,
    age_s: float = 60.0,
    prompt: str = "a red fox in the snow",
    user: str = "alice",
    **fields: object,
) -> JobRecord:
    created = NOW - age_s
    finished = created + took_s if took_s is not None and state != StoredJobState.QUEUED else None
    record = JobRecord(
        id=job_id,
        user_id=user,
        chat_id="chat",
        reply_to=1,
        model=model,
        request_json="{}",
        prompt=prompt,
        created_at_s=created,
        state=state,
        finished_at_s=finished,
    )
    for name, value in fields.items():
        setattr(record, name, value)
    return record


# -- history ---------------------------------------------------------------------


def test_history_lines_newest_first_with_state_words() -> None:
    long_prompt = "a very long prompt " * 10
    records = [
        job("j5", state=StoredJobState.QUEUED, age_s=5),
        job("j4", state=StoredJobState.DELIVERING, age_s=30),
        job(
            "j3", model="sdxl", state=StoredJobState.FAILED, error_kind="worker_timeout", age_s=200
        ),
        job("j2", state=StoredJobState.CANCELLED, age_s=3600),
        job("j1", cache_hit=True, age_s=7500, prompt=long_prompt),
        job("j0", age_s=45),
    ]
    lines = format_history(records, now_s=NOW).splitlines()
    assert lines[0] == "Your last 6 images:"
    assert lines[1] == "• j5 flux 5 s ago: waiting — a red fox in the snow"
    assert lines[2] == "• j4 flux 30 s ago: sending — a red fox in the snow"
    assert lines[3] == (
        "• j3 sdxl 3 min 20 s ago: failed (the worker took too long) — a red fox in the snow"
    )
    assert lines[4] == "• j2 flux 1 h ago: cancelled — a red fox in the snow"
    preview = lines[5].split(" — ", 1)[1]
    assert lines[5].startswith("• j1 flux 2 h 5 min ago: delivered (cache) — a very long")
    assert preview.endswith("…")
    assert len(preview) <= 60
    assert lines[6] == "• j0 flux 45 s ago: delivered — a red fox in the snow"
    assert lines[-1] == HISTORY_FOOTER
    assert HISTORY_FOOTER == (
        "Send one again: /image resend <id> · Make a new one: /image again <id>"
    )


def test_history_one_image_and_multiline_prompt() -> None:
    text = format_history([job("a1", prompt="two\nlines")], now_s=NOW)
    assert text.splitlines()[0] == "Your last 1 image:"
    assert "— two lines" in text


def test_history_failed_without_a_known_kind_says_failed() -> None:
    records = [
        job("a1", state=StoredJobState.FAILED),
        job("a2", state=StoredJobState.FAILED, error_kind="some_future_kind"),
    ]
    lines = format_history(records, now_s=NOW).splitlines()
    assert lines[1] == "• a1 flux 1 min ago: failed — a red fox in the snow"
    assert lines[2] == "• a2 flux 1 min ago: failed — a red fox in the snow"


def test_history_names_the_retry_of_an_unsent_image_and_no_internal_codes() -> None:
    kinds = [
        "delivery_failed", "chat", "worker_timeout", "worker_unavailable", "worker_auth",
        "content_filtered", "quota_exhausted", "generation", "internal", "model_gone", "store",
    ]  # fmt: skip
    records = [job(f"k{i}", state=StoredJobState.FAILED, error_kind=k) for i, k in enumerate(kinds)]
    text = format_history(records, now_s=NOW)
    assert "• k0 flux 1 min ago: made but not sent (try /image retry k0) —" in text
    assert "• k1 flux 1 min ago: made but not sent —" in text
    assert "blocked by the content filter" in text
    for kind in kinds:
        assert kind not in text.replace("/image retry k0", "")


def test_empty_history() -> None:
    assert format_history([], now_s=NOW) == EMPTY_HISTORY
    assert EMPTY_HISTORY == "You have no images yet. Start with /image=flux=a red fox in the snow"


def test_owner_view_names_users_and_has_no_footer() -> None:
    text = format_history([job("a1", user="bob")], now_s=NOW, owner_view=True)
    assert text.splitlines() == [
        "Last 1 image:",
        "• a1 @bob flux 1 min ago: delivered — a red fox in the snow",
    ]
    assert format_history([], now_s=NOW, owner_view=True) == "No images yet."


def test_history_to_json_is_plain_json() -> None:
    records = [job("a2", took_s=12.5, cache_hit=True), job("a1", state=StoredJobState.QUEUED)]
    data = history_to_json(records)
    assert json.loads(json.dumps(data)) == data
    assert [d["id"] for d in data] == ["a2", "a1"]
    assert data[0]["state"] == "done"
    assert data[0]["total_s"] == pytest.approx(12.5)
    assert data[0]["cache_hit"] is True
    assert data[1]["total_s"] is None
    assert "request_json" not in data[0]


# -- statistics ------------------------------------------------------------------


def test_nearest_rank() -> None:
    values = [float(v) for v in range(1, 21)]
    assert nearest_rank(values, 95) == 19.0
    assert nearest_rank(values, 50) == 10.0
    assert nearest_rank([3.0], 95) == 3.0
    assert nearest_rank([1.0, 2.0, 3.0], 95) == 3.0


def sample() -> list[JobRecord]:
    flux = [
        job(f"f{i}", took_s=t, enhancer="OpenRouter (m)") for i, t in enumerate([10, 20, 30, 40])
    ]
    flux[0].cache_hit = True
    flux[1].cache_hit = True
    sdxl = [
        job(f"s{i}", model="sdxl", took_s=float(i + 1), enhancer="original prompt")
        for i in range(20)
    ]
    failures = [
        job("x1", state=StoredJobState.FAILED, error_kind="worker_timeout"),
        job("x2", state=StoredJobState.FAILED, error_kind="content_filtered"),
        job("x3", state=StoredJobState.FAILED, error_kind="worker_timeout"),
        job("x4", state=StoredJobState.FAILED, error_kind="worker_auth"),
        job("x5", state=StoredJobState.FAILED, error_kind=None),
    ]
    others = [
        job("c1", state=StoredJobState.CANCELLED),
        job("q1", state=StoredJobState.QUEUED),
        # Delivered but without an enhancer recorded, and without a finish time.
        job("d1", model="flux", took_s=None),
    ]
    return [*flux, *sdxl, *failures, *others]


def test_compute_stats_exact_numbers() -> None:
    stats = compute_stats(sample(), days=7, queue=[("flux", 2, 1)])
    assert stats.days == 7
    assert stats.jobs == 32
    assert stats.done == 25
    assert stats.failed == 5
    assert stats.cancelled == 1
    assert stats.success_rate == pytest.approx(25 / 30)
    assert stats.per_model == [
        ModelTimes(model="flux", count=4, median_s=25.0, p95_s=40.0),
        ModelTimes(model="sdxl", count=20, median_s=10.5, p95_s=19.0),
    ]
    assert stats.cache_hits == 2
    assert stats.cache_hit_rate == pytest.approx(2 / 25)
    assert stats.enhanced == 4
    assert stats.enhancer_fallback_rate == pytest.approx(20 / 25)
    assert list(stats.errors_by_kind.items()) == [
        ("worker_timeout", 2),
        ("content_filtered", 1),
        ("unknown", 1),
        ("worker_auth", 1),
    ]
    assert stats.queue == [("flux", 2, 1)]


def test_compute_stats_of_nothing() -> None:
    stats = compute_stats([], days=1, queue=[])
    assert stats.jobs == 0
    assert stats.success_rate is None
    assert stats.cache_hit_rate is None
    assert stats.enhancer_fallback_rate is None
    assert stats.per_model == []
    assert stats.errors_by_kind == {}
    text = format_stats(stats)
    assert text.splitlines() == [
        "Jobs in the last day: 0 (0 delivered, 0 failed, 0 cancelled)",
        "Success rate: – (nothing finished)",
        "Time to image: – (nothing delivered)",
        "Queues now: (only shown in chat)",
        "Cache hits: –",
        "Prompts enhanced: 0; original prompt used: – of delivered",
        "Errors: none",
    ]


def test_format_stats_block() -> None:
    stats = compute_stats(sample(), days=7, queue=[("flux", 2, 1), ("sdxl", 0, 0)])
    assert format_stats(stats).splitlines() == [
        "Jobs in the last 7 days: 32 (25 delivered, 5 failed, 1 cancelled, 1 unfinished)",
        "Success rate: 83% (25 of 30)",
        "Time to image (median / p95):",
        "  flux: 25.0 s / 40.0 s (4 images)",
        "  sdxl: 10.5 s / 19.0 s (20 images)",
        "Queues now: flux 2 waiting, 1 running; sdxl 0 waiting, 0 running",
        "Cache hits: 8% (2 of 25)",
        "Prompts enhanced: 4; original prompt used: 80% of delivered",
        "Errors: worker_timeout 2, content_filtered 1, unknown 1, worker_auth 1",
    ]


def test_stats_to_json() -> None:
    stats = compute_stats(sample(), days=7, queue=[("flux", 2, 1)])
    data = stats_to_json(stats)
    assert json.loads(json.dumps(data)) == data
    assert data["done"] == 25
    assert data["per_model"][1] == {"model": "sdxl", "count": 20, "median_s": 10.5, "p95_s": 19.0}
    assert data["queue"] == [{"model": "flux", "waiting": 2, "running": 1}]
    assert list(data["errors_by_kind"]) == [
        "worker_timeout",
        "content_filtered",
        "unknown",
        "worker_auth",
    ]
    assert data["success_rate"] == pytest.approx(25 / 30)

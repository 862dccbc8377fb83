"""The user-message catalogue: what people are told, in words that fit the case."""

from __future__ import annotations

import pytest

from sakaibot.errors import (
    PromptTooLong,
    RateLimited,
    TransientWorkerError,
    WorkerGaveUp,
    WorkerTimeout,
    format_wait,
)


@pytest.mark.parametrize(
    ("seconds", "said"),
    [
        (0.2, "1 s"),
        (45, "45 s"),
        (60, "1 min"),
        (95, "1 min 35 s"),
        (3600, "1 h"),
        (3900, "1 h 5 min"),
    ],
)
def test_waits_read_like_a_person_wrote_them(seconds: float, said: str) -> None:
    assert format_wait(seconds) == said


def test_giving_up_after_timeouts_says_it_took_too_long() -> None:
    try:
        try:
            raise WorkerTimeout("read timeout", model="Flux")
        except WorkerTimeout as last:
            raise WorkerGaveUp("read timeout", model="Flux", attempts=3) from last
    except WorkerGaveUp as gave_up:
        message = gave_up.user_message
    assert message.startswith("The Flux worker took too long to answer (tried 3 times).")


def test_giving_up_after_one_try_says_once() -> None:
    try:
        try:
            raise TransientWorkerError("503", model="SDXL")
        except TransientWorkerError as last:
            raise WorkerGaveUp("503", model="SDXL", attempts=1) from last
    except WorkerGaveUp as gave_up:
        message = gave_up.user_message
    assert "The SDXL worker is busy or unreachable right now (tried once)." in message


def test_singular_and_plural() -> None:
    assert "Shorten it by 1 character and" in PromptTooLong(1001, 1000).user_message
    assert "Shorten it by 5 characters and" in PromptTooLong(1005, 1000).user_message
    assert "the limit of 1 image per 1 h" in RateLimited(30, 1, 3600).user_message

"""Every fault of the development worker through the whole pipeline.

One development worker serves the module; each test builds a fresh app with
:func:`~sakaibot.app.build_app` and a real :class:`~sakaibot.workers.client.WorkerClient`
over loopback HTTP (short timeouts, fake retry sleeps), sends one ``/image``
command carrying a ``[fault:NAME]`` (or ``[llm:NAME]``) marker, drains the app
and checks what a person would see, what the worker served, the rate limiter
and the data folder.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from sakaibot.app import App, build_app
from sakaibot.chat.port import IncomingMessage
from sakaibot.devworker import (
    DEV_LLM_MODEL,
    FAULT_NAMES,
    LLM_FAULT_NAMES,
    DevWorker,
    DevWorkerConfig,
)
from sakaibot.errors import (
    ContentFiltered,
    GenerationError,
    ImageTooLarge,
    InvalidImage,
    QuotaExhausted,
    WorkerAuthError,
    WorkerBadRequest,
    WorkerGaveUp,
)
from sakaibot.pipeline import JobOutcome
from sakaibot.settings import load_settings
from sakaibot.status import failed_text
from sakaibot.workers.client import WorkerClient, build_http_client
from sakaibot.workers.images import inspect_image
from tests.support.fakes import FakeClock, RecordingChat

API_KEY = "fault-matrix-key"
IMAGE_MAX_BYTES = 3_000_000
MAX_ATTEMPTS = 3
#: Every drain is bounded: a fault that makes the pipeline hang fails the test.
DRAIN_TIMEOUT_S = 15.0
#: The ``trickle`` fault sends 16 pieces this far apart: well within the 1 s
#: read timeout between chunks, so a slow-but-steady worker still succeeds.
TRICKLE_DELAY_MS = 40

_prompt_numbers = itertools.count(1)


@dataclass(frozen=True)
class Expect:
    """What a fault must end in."""

    #: ``None``: an image is delivered.
    error: type[GenerationError] | None = None
    #: How the user message starts (``{model}`` is the model's label).
    start: str = ""
    #: What the message tells the user (or the owner) to do.
    advice: str = ""
    #: Transient: retried up to MAX_ATTEMPTS, then WorkerGaveUp.
    retried: bool = False
    #: A Retry-After the worker sends; the client must wait at least this long.
    retry_after_s: float | None = None
    error_kind: str | None = None


IMAGE = Expect()
BAD_REQUEST = Expect(
    WorkerBadRequest,
    "The {model} worker rejected the request.",
    "Try a simpler prompt or fewer flags",
    error_kind="worker_bad_request",
)
GAVE_UP = Expect(
    WorkerGaveUp,
    "The {model} worker is busy or unreachable right now (tried 3 times).",
    "please try again in a few minutes",
    retried=True,
    error_kind="worker_unavailable",
)
NOT_AN_IMAGE = Expect(
    InvalidImage,
    "The {model} worker answered, but not with an image.",
    "check the worker URL (sakaibot verify)",
    error_kind="invalid_image",
)

#: Keyed by every fault name; a fault added to FAULT_NAMES without an entry fails.
EXPECTED: dict[str, Expect] = {
    "ok": IMAGE,
    "400": BAD_REQUEST,
    "401": Expect(
        WorkerAuthError,
        "The {model} worker refused our credentials.",
        "should check the worker's API key (FLUX_API_KEY or SDXL_API_KEY)",
        error_kind="worker_auth",
    ),
    "405": BAD_REQUEST,
    "408": GAVE_UP,
    "413": BAD_REQUEST,
    "429": GAVE_UP,
    "429-quota": Expect(
        QuotaExhausted,
        "The {model} worker has used up its daily allowance.",
        "It resets at 00:00 UTC; try again then or use another model",
        error_kind="quota_exhausted",
    ),
    "500": GAVE_UP,
    "500-nsfw": Expect(
        ContentFiltered,
        "Your prompt was filtered by the image service's safety check.",
        "Rephrase it and try again.",
        error_kind="content_filtered",
    ),
    "500-capacity": GAVE_UP,
    "502": GAVE_UP,
    "503": GAVE_UP,
    "504": GAVE_UP,
    "retry-after": Expect(
        WorkerGaveUp,
        GAVE_UP.start,
        GAVE_UP.advice,
        retried=True,
        retry_after_s=2.0,
        error_kind="worker_unavailable",
    ),
    "timeout": Expect(
        WorkerGaveUp,
        "The {model} worker took too long to answer (tried 3 times).",
        "please try again in a few minutes",
        retried=True,
        error_kind="worker_unavailable",
    ),
    "reset": GAVE_UP,
    "truncated": GAVE_UP,
    "text": NOT_AN_IMAGE,
    "html": NOT_AN_IMAGE,
    "json": IMAGE,  # base64 in JSON is the flux-1-schnell shape: decoded
    "json-result": IMAGE,  # ... and so is raw Workers AI's {"result": {"image": ...}}
    "oversized": Expect(
        ImageTooLarge,
        "The {model} worker sent an image larger than the 3 MB this bot accepts.",
        "the bot's owner can raise IMAGE_MAX_BYTES",
        error_kind="image_too_large",
    ),
    "trickle": IMAGE,
}

LABELS = {"flux": "Flux", "sdxl": "SDXL"}


@pytest.fixture(scope="module")
def worker() -> Iterator[DevWorker]:
    dev = DevWorker(
        DevWorkerConfig(
            api_key=API_KEY,
            trickle_delay_ms=TRICKLE_DELAY_MS,
            # Still ten times the cap; the client refuses it from Content-Length alone.
            oversized_bytes=30_000_000,
        )
    )
    dev.start()
    yield dev
    dev.stop()


@dataclass
class RecordingSleep:
    """The worker client's clock and sleep: retries cost no real time, waits are kept."""

    clock: FakeClock = field(default_factory=FakeClock)
    waits_s: list[float] = field(default_factory=list)

    async def __call__(self, seconds: float) -> None:
        self.waits_s.append(seconds)
        await self.clock.sleep(seconds)


@dataclass
class Rig:
    app: App
    chat: RecordingChat
    outcomes: list[JobOutcome]
    sleeps: RecordingSleep
    worker: DevWorker
    served_before: int = 0

    async def run(self, text: str, *, message_id: int = 1, user: str = "ann") -> None:
        """Send one command and wait, bounded, until everything it started is over."""
        await self.app.bot.handle(IncomingMessage("chat", message_id, user, text))
        await asyncio.wait_for(self.app.drain(), timeout=DRAIN_TIMEOUT_S)

    def served(self, path: str) -> list[str]:
        """What the worker served on ``path`` since this rig was built."""
        return [what for p, what in self.worker.served[self.served_before :] if p == path]


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    client = build_http_client(connect_timeout_s=1, read_timeout_s=1)
    yield client
    await client.aclose()


MakeRig = Callable[..., Awaitable[Rig]]


@pytest.fixture
async def make_rig(
    worker: DevWorker, http: httpx.AsyncClient, tmp_path: Path
) -> AsyncIterator[MakeRig]:
    """Builds and starts an app against the module's worker; closed after the test."""
    rigs: list[Rig] = []

    async def make(*, attempt_timeout_s: float | None = None, **extra: object) -> Rig:
        sleeps = RecordingSleep()
        generator = WorkerClient(
            http,
            max_image_bytes=IMAGE_MAX_BYTES,
            retry_budget_s=30,
            max_attempts=MAX_ATTEMPTS,
            attempt_timeout_s=attempt_timeout_s,
            sleep=sleeps,
            clock=sleeps.clock,
        )
        values: dict[str, object] = {
            "flux_worker_url": f"{worker.url}/flux",
            "sdxl_worker_url": f"{worker.url}/sdxl",
            "sdxl_api_key": API_KEY,
            "image_user_limits": "off",
            "cache_ttl_s": 0,
            "status_edit_interval_s": 0,
            "image_max_bytes": IMAGE_MAX_BYTES,
            "llm_provider": "none",
        }
        values.update(extra)
        chat = RecordingChat()
        outcomes: list[JobOutcome] = []
        app = build_app(
            load_settings(env_file=None, **values),
            chat,
            on_outcome=outcomes.append,
            generator=generator,
        )
        rig = Rig(
            app=app,
            chat=chat,
            outcomes=outcomes,
            sleeps=sleeps,
            worker=worker,
            served_before=len(worker.served),
        )
        rigs.append(rig)
        await app.start()
        return rig

    yield make
    for rig in rigs:
        await rig.app.aclose()


def unique_prompt(marker: str) -> str:
    """A prompt no other test uses (``NAME*N`` faults are counted per prompt)."""
    return f"a fox number {next(_prompt_numbers)} {marker}"


def assert_no_leftovers(tmp_path: Path, rig: Rig) -> None:
    """No temporary file anywhere; the image folder holds exactly the delivered images."""
    assert sorted(tmp_path.rglob("*.partial")) == []
    images = tmp_path / "data" / "images"
    stored: set[str] = set()
    for path in sorted(images.iterdir()) if images.is_dir() else []:
        data = path.read_bytes()
        _mime, extension, _w, _h = inspect_image(data)  # raises for a damaged image
        assert path.name == f"{hashlib.sha256(data).hexdigest()}{extension}"
        stored.add(path.name)
    delivered = {
        f"{hashlib.sha256(e.image.image.data).hexdigest()}{e.image.image.extension}"
        for e in rig.chat.of_kind("image")
        if e.image is not None
    }
    assert stored == delivered


def assert_one_image(rig: Rig, *, reply_to: int = 1) -> str:
    """The job ended with its image and nothing else; returns the caption."""
    assert [(o.ok, o.reply_to) for o in rig.outcomes] == [(True, reply_to)]
    [image] = rig.chat.of_kind("image")
    assert image.reply_to == reply_to
    assert rig.outcomes[0].image_message_id == image.message_id
    assert rig.chat.visible_texts() == []  # the status message was removed
    assert image.image is not None
    inspect_image(image.image.image.data)
    return image.text


def assert_one_error(rig: Rig, message: str, *, kind: str | None) -> None:
    """The job ended with exactly one error message, ``message``, and no image."""
    [outcome] = rig.outcomes
    assert outcome.ok is False
    assert outcome.error == message
    if kind is not None:
        assert outcome.error_kind == kind
    assert rig.chat.of_kind("image") == []
    assert rig.chat.visible_texts() == [failed_text(message)]


@pytest.mark.parametrize("fault", FAULT_NAMES)
async def test_every_fault_ends_in_one_clear_outcome(
    make_rig: MakeRig, tmp_path: Path, fault: str
) -> None:
    await check_fault(make_rig, tmp_path, fault, "flux")


@pytest.mark.parametrize("fault", ["ok", "401", "503", "text", "retry-after"])
async def test_sdxl_faults_end_in_one_clear_outcome(
    make_rig: MakeRig, tmp_path: Path, fault: str
) -> None:
    await check_fault(make_rig, tmp_path, fault, "sdxl")


async def check_fault(make_rig: MakeRig, tmp_path: Path, fault: str, model: str) -> None:
    expect = EXPECTED[fault]
    rig = await make_rig()
    await rig.run(f"/image={model}={unique_prompt(f'[fault:{fault}]')}")

    served = rig.served(f"/{model}")
    if expect.error is None:
        assert_one_image(rig)
        assert served == [fault]
        assert rig.sleeps.waits_s == []
    else:
        label = LABELS[model]
        start = expect.start.format(model=label)
        [outcome] = rig.outcomes
        assert outcome.error is not None
        assert outcome.error.startswith(start), outcome.error
        assert expect.advice in outcome.error
        assert_one_error(rig, outcome.error, kind=expect.error_kind)
        if expect.retried:
            assert served == [fault] * MAX_ATTEMPTS
            assert len(rig.sleeps.waits_s) == MAX_ATTEMPTS - 1
            assert "Your allowance was not used" in outcome.error
        else:
            assert served == [fault], "a permanent failure must not be retried"
            assert rig.sleeps.waits_s == []
        if expect.retry_after_s is not None:
            assert rig.sleeps.waits_s
            assert all(wait >= expect.retry_after_s for wait in rig.sleeps.waits_s)
    assert_no_leftovers(tmp_path, rig)


def test_every_fault_has_an_expectation() -> None:
    assert set(EXPECTED) == set(FAULT_NAMES)


@pytest.mark.parametrize("fault", ["503", "reset", "timeout"])
async def test_a_transient_fault_then_success_delivers_the_image(
    make_rig: MakeRig, tmp_path: Path, fault: str
) -> None:
    rig = await make_rig()
    await rig.run(f"/image=flux={unique_prompt(f'[fault:{fault}*2]')}")
    assert_one_image(rig)
    assert rig.served("/flux") == [fault, fault, "ok"]
    assert len(rig.sleeps.waits_s) == 2
    assert_no_leftovers(tmp_path, rig)


async def test_a_trickling_worker_cannot_stall_the_queue(make_rig: MakeRig, tmp_path: Path) -> None:
    # Each piece comes well within the 1 s read timeout, but the whole answer
    # takes about 0.6 s: past this attempt deadline, every time.
    rig = await make_rig(attempt_timeout_s=0.2)
    await rig.app.bot.handle(
        IncomingMessage("chat", 1, "ann", f"/image=flux={unique_prompt('[fault:trickle]')}")
    )
    await rig.run(f"/image=flux={unique_prompt('')}", message_id=2, user="bob")

    assert rig.served("/flux") == ["trickle"] * MAX_ATTEMPTS + ["ok"]
    slow, fine = sorted(rig.outcomes, key=lambda outcome: outcome.reply_to)
    assert (slow.ok, slow.error_kind) == (False, "worker_unavailable")
    assert slow.error is not None
    assert slow.error.startswith(f"The Flux worker took too long to answer (tried {MAX_ATTEMPTS}")
    assert fine.ok  # the next job in the same queue was not held up
    assert_no_leftovers(tmp_path, rig)


@pytest.mark.parametrize(
    ("fault", "charged"),
    [
        ("500-nsfw", True),  # the user's own doing: the slot is kept
        ("ok", True),  # a delivered image counts, of course
        ("503", False),
        ("401", False),
        ("400", False),
        ("429-quota", False),
        ("text", False),
        ("oversized", False),
        ("timeout", False),
    ],
)
async def test_only_filtered_prompts_keep_their_rate_limit_slot(
    make_rig: MakeRig, tmp_path: Path, fault: str, charged: bool
) -> None:
    rig = await make_rig(image_user_limits="1/1h")
    assert rig.app.limiter.check("ann") is None
    await rig.run(f"/image=flux={unique_prompt(f'[fault:{fault}]')}")
    assert len(rig.outcomes) == 1
    denial = rig.app.limiter.check("ann")
    if charged:
        assert denial is not None
        assert denial.window.limit == 1
    else:
        assert denial is None, f"{fault}: the slot was not given back"
    # Someone else was never affected.
    assert rig.app.limiter.check("bob") is None
    assert_no_leftovers(tmp_path, rig)


@pytest.mark.parametrize("llm_fault", [name for name in LLM_FAULT_NAMES if name != "ok"])
async def test_an_enhancer_fault_never_fails_the_job(
    make_rig: MakeRig, worker: DevWorker, tmp_path: Path, llm_fault: str
) -> None:
    rig = await make_rig(
        llm_provider="openrouter",  # no key: the development LLM stands in
        llm_dev_url=f"{worker.url}/v1",
        enhancer_timeout_s=1.5,
    )
    prompt = unique_prompt(f"[llm:{llm_fault}]")
    await rig.run(f"/image=flux={prompt}")
    caption = assert_one_image(rig)
    assert " · prompt: original prompt · " in caption
    assert caption.endswith(f"\n\n{prompt}")  # the user's own words were used
    assert rig.served("/v1/chat/completions") == [llm_fault]
    assert rig.served("/flux") == ["ok"]
    assert_no_leftovers(tmp_path, rig)


async def test_the_development_llm_enhances_the_prompt(
    make_rig: MakeRig, worker: DevWorker, tmp_path: Path
) -> None:
    rig = await make_rig(
        llm_provider="openrouter",
        llm_dev_url=f"{worker.url}/v1",
        enhancer_timeout_s=1.5,
    )
    await rig.run(f"/image=flux={unique_prompt('[llm:ok]')}")
    caption = assert_one_image(rig)
    assert f" · prompt: development LLM ({DEV_LLM_MODEL}) · " in caption
    assert "development LLM: soft light, rich detail" in caption
    assert rig.served("/v1/chat/completions") == ["ok"]
    assert_no_leftovers(tmp_path, rig)

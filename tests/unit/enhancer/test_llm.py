"""The LLM enhancer against real OpenAI-compatible servers on loopback."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Iterator

import pytest
from pydantic import SecretStr

from sakaibot.enhancer import ORIGINAL_PROMPT
from sakaibot.enhancer.cleaning import SYSTEM_PROMPT
from sakaibot.enhancer.llm import LlmEnhancer, LlmProvider, providers_from_settings
from sakaibot.settings import load_settings
from tests.support.llm_stub import (
    Behaviour,
    Completion,
    Garbage,
    Hang,
    Huge,
    LlmStub,
    NoChoices,
    Status,
)

# Long enough for a loaded CI machine to answer; the hanging stubs cost this much each.
TIMEOUT_S = 1.0
OPENROUTER_KEY = "sk-or-test-0123456789abcdef"
GEMINI_KEY = "gemini-test-fedcba9876543210"
PROMPT = "a fox in the snow"
ENHANCED = (
    "A lone red fox standing in fresh powder snow at dawn, soft golden light, "
    "frosted pine forest behind, shallow depth of field, photorealistic"
)

MakeStub = Callable[..., LlmStub]


@pytest.fixture(autouse=True)
def _no_openai_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # The SDK falls back to these when an argument is missing; none may matter here.
    for name in (
        "OPENAI_API_KEY",
        "OPENAI_BASE_URL",
        "OPENAI_ORG_ID",
        "OPENAI_PROJECT_ID",
        "OPENAI_ADMIN_KEY",
        "OPENAI_LOG",
    ):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def make_stub() -> Iterator[MakeStub]:
    stubs: list[LlmStub] = []

    def make(*behaviours: Behaviour) -> LlmStub:
        stub = LlmStub(*behaviours)
        stub.start()
        stubs.append(stub)
        return stub

    yield make
    for stub in stubs:
        stub.stop()


@pytest.fixture
async def enhancers() -> AsyncIterator[Callable[..., LlmEnhancer]]:
    built: list[LlmEnhancer] = []

    def build(*providers: LlmProvider, max_chars: int = 1000) -> LlmEnhancer:
        enhancer = LlmEnhancer(providers, timeout_s=TIMEOUT_S, max_chars=max_chars)
        built.append(enhancer)
        return enhancer

    yield build
    for enhancer in built:
        await enhancer.aclose()


def openrouter(stub: LlmStub) -> LlmProvider:
    return LlmProvider("OpenRouter", stub.base_url, SecretStr(OPENROUTER_KEY), "openai/gpt-4o-mini")


def gemini(stub: LlmStub) -> LlmProvider:
    return LlmProvider("Gemini", stub.base_url, SecretStr(GEMINI_KEY), "gemini-2.0-flash")


async def test_the_first_provider_answers(
    make_stub: MakeStub, enhancers: Callable[..., LlmEnhancer]
) -> None:
    first, second = make_stub(Completion(ENHANCED)), make_stub()

    result = await enhancers(openrouter(first), gemini(second)).enhance(PROMPT)

    assert result.text == ENHANCED
    assert result.source == "OpenRouter (openai/gpt-4o-mini)"
    assert result.enhanced
    assert second.requests == []


async def test_the_request_carries_model_prompts_and_bearer(
    make_stub: MakeStub, enhancers: Callable[..., LlmEnhancer]
) -> None:
    stub = make_stub(Completion(ENHANCED))

    await enhancers(openrouter(stub)).enhance(PROMPT)

    [request] = stub.requests
    assert request.path == "/v1/chat/completions"
    assert request.authorization == f"Bearer {OPENROUTER_KEY}"
    assert request.json["model"] == "openai/gpt-4o-mini"
    assert request.messages == [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": PROMPT},
    ]
    assert 0.0 < request.json["temperature"] <= 1.0
    assert request.json["max_tokens"] >= 200


async def test_openai_environment_variables_are_ignored(
    make_stub: MakeStub,
    enhancers: Callable[..., LlmEnhancer],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-the-environment")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    monkeypatch.setenv("OPENAI_ORG_ID", "org-from-the-environment")
    monkeypatch.setenv("OPENAI_PROJECT_ID", "proj-from-the-environment")
    stub = make_stub(Completion(ENHANCED))

    result = await enhancers(openrouter(stub)).enhance(PROMPT)

    assert result.text == ENHANCED
    [request] = stub.requests
    assert request.authorization == f"Bearer {OPENROUTER_KEY}"
    assert "openai-organization" not in request.headers
    assert "openai-project" not in request.headers


@pytest.mark.parametrize(
    "failure",
    [
        Status(500),
        Status(401, "invalid api key"),
        Status(429, "rate limited"),
        Hang(),
        Garbage(),
        Garbage(b"plain words", "text/plain"),
        NoChoices(),
        Completion(None),
        Completion(""),
        Completion("   "),
        Completion("A fox."),  # under MIN_ENHANCED_CHARS once cleaned
        Completion("```\nfox\n```"),
    ],
    ids=lambda behaviour: repr(behaviour)[:40],
)
async def test_a_failing_first_provider_falls_back_to_the_second(
    make_stub: MakeStub, enhancers: Callable[..., LlmEnhancer], failure: Behaviour
) -> None:
    first, second = make_stub(failure), make_stub(Completion(ENHANCED))

    result = await enhancers(openrouter(first), gemini(second)).enhance(PROMPT)

    assert result.text == ENHANCED
    assert result.source == "Gemini (gemini-2.0-flash)"
    assert len(first.requests) == 1  # no SDK retries: the next provider is the retry
    assert len(second.requests) == 1
    assert second.requests[0].authorization == f"Bearer {GEMINI_KEY}"


async def test_all_failing_gives_the_original_prompt(
    make_stub: MakeStub, enhancers: Callable[..., LlmEnhancer]
) -> None:
    first, second = make_stub(Status(500)), make_stub(Hang())

    result = await enhancers(openrouter(first), gemini(second)).enhance(PROMPT)

    assert result.text == PROMPT
    assert result.source == ORIGINAL_PROMPT == "original prompt"
    assert not result.enhanced


async def test_no_provider_gives_the_original_prompt(
    enhancers: Callable[..., LlmEnhancer],
) -> None:
    result = await enhancers().enhance(PROMPT)

    assert result.text == PROMPT
    assert result.source == ORIGINAL_PROMPT


async def test_an_unreachable_provider_falls_back(
    make_stub: MakeStub, enhancers: Callable[..., LlmEnhancer]
) -> None:
    gone = make_stub()
    unreachable = openrouter(gone)
    gone.stop()
    second = make_stub(Completion(ENHANCED))

    result = await enhancers(unreachable, gemini(second)).enhance(PROMPT)

    assert result.source == "Gemini (gemini-2.0-flash)"


async def test_the_answer_is_cleaned_and_cut(
    make_stub: MakeStub, enhancers: Callable[..., LlmEnhancer]
) -> None:
    stub = make_stub(
        Completion(
            "Sure! Here's an enhanced prompt:\n\n```\n"
            '"**A lone red fox** standing in fresh powder snow at dawn, soft light"\n```'
        )
    )

    result = await enhancers(openrouter(stub), max_chars=40).enhance(PROMPT)

    assert result.text == "A lone red fox standing in fresh powder"
    assert result.source.startswith("OpenRouter")


async def test_the_enhancer_is_reusable_and_clients_are_reused(
    make_stub: MakeStub, enhancers: Callable[..., LlmEnhancer]
) -> None:
    stub = make_stub(Completion(ENHANCED), Completion(ENHANCED + " again"))
    enhancer = enhancers(openrouter(stub))

    first = await enhancer.enhance(PROMPT)
    second = await enhancer.enhance("another idea")

    assert first.text == ENHANCED
    assert second.text == ENHANCED + " again"
    assert stub.requests[1].messages[1]["content"] == "another idea"


async def test_warnings_name_the_provider_and_never_the_key(
    make_stub: MakeStub,
    enhancers: Callable[..., LlmEnhancer],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    first = make_stub(Status(401, f"invalid key {OPENROUTER_KEY}"))
    second = make_stub(Hang())

    result = await enhancers(openrouter(first), gemini(second)).enhance(PROMPT)

    assert result.source == ORIGINAL_PROMPT
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert [r.name for r in warnings] == ["sakaibot.enhancer.llm"] * 2
    assert "OpenRouter" in warnings[0].getMessage()
    assert "AuthenticationError" in warnings[0].getMessage()
    assert "Gemini" in warnings[1].getMessage()
    assert "TimeoutError" in warnings[1].getMessage()
    assert OPENROUTER_KEY not in caplog.text
    assert GEMINI_KEY not in caplog.text


# -- answers are not trusted: size, invisible characters, secrets


@pytest.mark.parametrize("declare_length", [False, True], ids=["streamed", "declared"])
async def test_a_huge_answer_is_cut_off_and_the_prompt_used(
    make_stub: MakeStub, caplog: pytest.LogCaptureFixture, declare_length: bool
) -> None:
    # 100 MB: reading and parsing all of it took over a minute on the event loop.
    # The enhancer's timeout is far off here, so an answer that ends is one cut
    # off by its size; the log line says which.
    stub = make_stub(Huge(100_000_000, declare_length=declare_length))
    enhancer = LlmEnhancer((openrouter(stub),), timeout_s=60.0, max_chars=1000)
    ticks = 0

    async def count_ticks() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.01)

    ticker = asyncio.create_task(count_ticks())
    try:
        with caplog.at_level(logging.WARNING, logger="sakaibot.enhancer.llm"):
            result = await enhancer.enhance(PROMPT)
    finally:
        ticker.cancel()
        await enhancer.aclose()

    assert result.text == PROMPT
    assert result.source == ORIGINAL_PROMPT
    [warning] = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "bytes" in warning  # cut off by its size...
    assert "Timeout" not in warning  # ...not by the clock
    assert ticks >= 1  # the loop kept turning meanwhile


async def test_bidi_format_and_zero_width_characters_are_stripped(
    make_stub: MakeStub, enhancers: Callable[..., LlmEnhancer]
) -> None:
    hidden = (
        "\u202eA lone red fox\u202c in fresh\u200b powder snow at \u2066dawn\u2069, "
        "soft\ufeff golden light, a family 👨\u200d👩\u200d👧 watching\U000e0041"
    )
    stub = make_stub(Completion(hidden))

    result = await enhancers(openrouter(stub)).enhance(PROMPT)

    assert result.text == (
        "A lone red fox in fresh powder snow at dawn, soft golden light, "
        "a family 👨\u200d👩\u200d👧 watching"
    )


@pytest.mark.parametrize(
    "leak",
    [
        f"A red fox in the snow, signed {OPENROUTER_KEY} at dawn",
        f"A red fox in the snow, signed {GEMINI_KEY[:6]}\u200b{GEMINI_KEY[6:]}",
        "A red fox in the snow, redis password hunter22-secret in a fence",
    ],
    ids=["llm-key", "other-key-split-by-zero-width", "redis-password"],
)
async def test_an_answer_holding_a_secret_is_discarded(
    make_stub: MakeStub, caplog: pytest.LogCaptureFixture, leak: str
) -> None:
    caplog.set_level(logging.DEBUG)
    stub = make_stub(Completion(leak))
    enhancer = LlmEnhancer(
        [openrouter(stub)],
        timeout_s=TIMEOUT_S,
        max_chars=1000,
        secret_values=[OPENROUTER_KEY, GEMINI_KEY, "hunter22-secret", "", "short"],
    )
    try:
        result = await enhancer.enhance(PROMPT)
    finally:
        await enhancer.aclose()

    assert result.text == PROMPT
    assert result.source == ORIGINAL_PROMPT
    assert "configured secret" in caplog.text
    for secret in (OPENROUTER_KEY, GEMINI_KEY, "hunter22-secret"):
        assert secret not in caplog.text


async def test_short_secret_values_do_not_block_ordinary_answers(
    make_stub: MakeStub,
) -> None:
    stub = make_stub(Completion(ENHANCED))
    enhancer = LlmEnhancer(
        [openrouter(stub)], timeout_s=TIMEOUT_S, max_chars=1000, secret_values=["fox", "a"]
    )
    try:
        result = await enhancer.enhance(PROMPT)
    finally:
        await enhancer.aclose()
    assert result.text == ENHANCED


def test_the_key_is_not_in_the_provider_repr() -> None:
    provider = LlmProvider("OpenRouter", "http://x/v1", SecretStr(OPENROUTER_KEY), "m")

    assert OPENROUTER_KEY not in repr(provider)


def test_the_constructor_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="timeout_s"):
        LlmEnhancer([], timeout_s=0, max_chars=1000)
    with pytest.raises(ValueError, match="max_chars"):
        LlmEnhancer([], timeout_s=1, max_chars=5)


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"openrouter_api_key": "a", "gemini_api_key": "b"}, ["OpenRouter", "Gemini"]),
        (
            {"llm_provider": "gemini", "openrouter_api_key": "a", "gemini_api_key": "b"},
            ["Gemini", "OpenRouter"],
        ),
        ({"openrouter_api_key": "a"}, ["OpenRouter"]),
        ({"llm_provider": "gemini", "openrouter_api_key": "a"}, ["OpenRouter"]),
        ({"gemini_api_key": "b"}, ["Gemini"]),
        ({}, []),
        ({"llm_provider": "none", "openrouter_api_key": "a", "gemini_api_key": "b"}, []),
    ],
)
def test_providers_from_settings(overrides: dict[str, str], expected: list[str]) -> None:
    settings = load_settings(env_file=None, **overrides)

    providers = providers_from_settings(settings)

    assert [provider.name for provider in providers] == expected


def test_providers_from_settings_carries_urls_models_and_keys() -> None:
    settings = load_settings(
        env_file=None,
        openrouter_api_key="or-key",
        openrouter_model="meta/llama",
        gemini_api_key="g-key",
        gemini_base_url="http://127.0.0.1:9/v1",
    )

    openrouter_provider, gemini_provider = providers_from_settings(settings)

    assert openrouter_provider.base_url == "https://openrouter.ai/api/v1"
    assert openrouter_provider.model == "meta/llama"
    assert openrouter_provider.api_key.get_secret_value() == "or-key"
    assert gemini_provider.base_url == "http://127.0.0.1:9/v1"
    assert gemini_provider.model == "gemini-2.0-flash"
    assert gemini_provider.api_key.get_secret_value() == "g-key"

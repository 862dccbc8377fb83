"""The prompt enhancer behind OpenAI-compatible chat APIs (OpenRouter, Gemini).

This is the only module that imports the OpenAI SDK. Providers are tried in
order; each one gets one call bounded by ``timeout_s``, with the SDK's own
retries off (the pipeline is waiting, and the next provider is the retry).
Whatever goes wrong — an API error, a timeout, an empty or too-short answer —
is turned into :class:`~sakaibot.errors.EnhancerError` in one place, logged
without any key, and the next provider is asked. When none helps, the user's
own prompt is used: :meth:`LlmEnhancer.enhance` never raises.

An answer is never trusted: at most :data:`MAX_ANSWER_BYTES` of it are read
(the SDK would otherwise read and parse a body of any size on the event loop),
it is parsed and cleaned on a thread from a bounded slice, and an answer that
contains any configured secret value (an LLM can be talked into echoing its
key) is thrown away.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import openai
from openai.types.chat import ChatCompletion
from pydantic import SecretStr

from sakaibot.commands import strip_invisible
from sakaibot.enhancer import EnhancedPrompt
from sakaibot.enhancer.cleaning import MIN_ENHANCED_CHARS, SYSTEM_PROMPT, clean_llm_output
from sakaibot.errors import EnhancerError
from sakaibot.settings import Settings

logger = logging.getLogger(__name__)

#: Enough variety for a vivid prompt, not so much that the subject drifts.
DEFAULT_TEMPERATURE = 0.7
#: 150 words are about 200 tokens; the rest is headroom for wordy models.
DEFAULT_MAX_TOKENS = 300
#: The most of an answer's body that is read: a 300-token completion is a few
#: KB of JSON, and reasoning models' extra fields fit many times over.
MAX_ANSWER_BYTES = 512 * 1024
#: How much of the answer's text, per character of the prompt wanted, is cleaned:
#: the cut comes before the regular expressions, so they always run on little.
_CLEANED_PER_WANTED_CHAR = 4
#: Secret values shorter than this are not looked for: they would match
#: ordinary words and throw away every answer.
MIN_SECRET_CHARS = 6


@dataclass(frozen=True)
class LlmProvider:
    """One OpenAI-compatible chat endpoint, with the model to ask for."""

    name: str  # "OpenRouter" or "Gemini": shown in the caption and the logs
    base_url: str
    api_key: SecretStr
    model: str


def providers_from_settings(settings: Settings) -> list[LlmProvider]:
    """The configured providers, ``LLM_PROVIDER`` first; those without a key are left out."""
    openrouter = (
        LlmProvider(
            name="OpenRouter",
            base_url=settings.openrouter_base_url,
            api_key=settings.openrouter_api_key,
            model=settings.openrouter_model,
        )
        if settings.openrouter_api_key is not None
        else None
    )
    gemini = (
        LlmProvider(
            name="Gemini",
            base_url=settings.gemini_base_url,
            api_key=settings.gemini_api_key,
            model=settings.gemini_model,
        )
        if settings.gemini_api_key is not None
        else None
    )
    if settings.llm_provider == "openrouter":
        ordered = [openrouter, gemini]
    elif settings.llm_provider == "gemini":
        ordered = [gemini, openrouter]
    else:
        return []
    configured = [provider for provider in ordered if provider is not None]
    if not configured and settings.llm_dev_url is not None:
        # `sakaibot chat --local`: the development worker's stand-in LLM, only
        # when no real one is configured.
        return [
            LlmProvider(
                name="development LLM",
                base_url=settings.llm_dev_url,
                api_key=SecretStr("development"),
                model="sakaibot-dev",
            )
        ]
    return configured


class LlmEnhancer:
    """A :class:`~sakaibot.enhancer.PromptEnhancer` that asks each provider in turn."""

    def __init__(
        self,
        providers: Sequence[LlmProvider],
        *,
        timeout_s: float,
        max_chars: int,
        temperature: float = DEFAULT_TEMPERATURE,
        max_tokens: int = DEFAULT_MAX_TOKENS,
        secret_values: Iterable[str] = (),
        max_answer_bytes: int = MAX_ANSWER_BYTES,
    ) -> None:
        """``secret_values``: every configured secret; an answer holding one is discarded."""
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be positive, not {timeout_s}")
        if max_chars < MIN_ENHANCED_CHARS:
            raise ValueError(f"max_chars must be at least {MIN_ENHANCED_CHARS}, not {max_chars}")
        self._providers = tuple(providers)
        self._timeout_s = timeout_s
        self._max_chars = max_chars
        self._temperature = temperature
        self._max_tokens = max_tokens
        self._secrets = tuple(
            sorted({v for v in secret_values if len(v) >= MIN_SECRET_CHARS}, key=len, reverse=True)
        )
        self._max_answer_bytes = max_answer_bytes
        # Built on first use, inside the running event loop; closed by aclose().
        self._clients: dict[int, openai.AsyncOpenAI] = {}

    @property
    def providers(self) -> tuple[LlmProvider, ...]:
        return self._providers

    async def enhance(self, prompt: str) -> EnhancedPrompt:
        """The first provider's cleaned answer, or ``prompt`` itself if none helped."""
        for index, provider in enumerate(self._providers):
            try:
                text = await self._ask(index, provider, prompt)
            except EnhancerError as exc:
                logger.warning(
                    "prompt enhancer %s (%s) failed: %s; %s",
                    provider.name,
                    provider.model,
                    _describe(exc.__cause__),
                    "trying the next one"
                    if index + 1 < len(self._providers)
                    else "using the original prompt",
                )
                continue
            return EnhancedPrompt(text=text, source=f"{provider.name} ({provider.model})")
        return EnhancedPrompt(text=prompt)

    async def aclose(self) -> None:
        """Close the HTTP clients; the enhancer can be used again afterwards."""
        clients = list(self._clients.values())
        self._clients.clear()
        for client in clients:
            await client.close()

    def _client(self, index: int, provider: LlmProvider) -> openai.AsyncOpenAI:
        client = self._clients.get(index)
        if client is None:
            # Everything is passed explicitly, so OPENAI_API_KEY / OPENAI_BASE_URL in
            # the environment cannot redirect a request or leak a key to a provider.
            client = openai.AsyncOpenAI(
                base_url=provider.base_url,
                api_key=provider.api_key.get_secret_value(),
                timeout=self._timeout_s,
                max_retries=0,
            )
            # The SDK reads these from OPENAI_ORG_ID / OPENAI_PROJECT_ID when not given
            # and would send them to every provider as OpenAI-Organization/-Project.
            client.organization = None
            client.project = None
            self._clients[index] = client
        return client

    async def _ask(self, index: int, provider: LlmProvider, prompt: str) -> str:
        """One provider's cleaned answer; every failure becomes :class:`EnhancerError`."""
        try:
            async with asyncio.timeout(self._timeout_s):
                client = self._client(index, provider)
                async with client.chat.completions.with_streaming_response.create(
                    model=provider.model,
                    messages=[
                        {"role": "system", "content": SYSTEM_PROMPT},
                        {"role": "user", "content": prompt},
                    ],
                    temperature=self._temperature,
                    max_tokens=self._max_tokens,
                ) as response:
                    body = await _read_capped(response, self._max_answer_bytes)
                # Parsing and cleaning are CPU work on untrusted text: off the loop.
                text = await asyncio.to_thread(self._usable_text, body)
        except Exception as exc:
            # The one translation point for the SDK's (and anything else's) errors.
            raise EnhancerError(f"{provider.name}: {_describe(exc)}") from exc
        return text

    def _usable_text(self, body: bytes) -> str:
        """The cleaned prompt in an answer's body, or :class:`_UnusableAnswerError`."""
        completion = ChatCompletion.model_validate_json(body)
        content = completion.choices[0].message.content if completion.choices else None
        if not isinstance(content, str):
            raise _UnusableAnswerError("no text in the answer")
        bounded = content[: self._max_chars * _CLEANED_PER_WANTED_CHAR]
        text = clean_llm_output(bounded, max_chars=self._max_chars)
        if self._holds_a_secret(bounded) or self._holds_a_secret(text):
            # Never the value, nor which setting it was, in the log.
            raise _UnusableAnswerError("answer contains a configured secret value; discarded")
        if len(text) < MIN_ENHANCED_CHARS:
            raise _UnusableAnswerError(f"answer under {MIN_ENHANCED_CHARS} characters")
        return text

    def _holds_a_secret(self, text: str) -> bool:
        # Invisible characters inside a key would hide it from a plain search.
        visible = strip_invisible(text)
        return any(secret in text or secret in visible for secret in self._secrets)


async def _read_capped(
    response: openai.AsyncAPIResponse[ChatCompletion], limit_bytes: int
) -> bytes:
    """The answer's body, refused as soon as it passes ``limit_bytes``."""
    declared = response.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit_bytes:
        raise _UnusableAnswerError(f"answer of {declared} bytes, over {limit_bytes}")
    buffer = bytearray()
    async for chunk in response.iter_bytes():
        buffer += chunk
        if len(buffer) > limit_bytes:
            # The rest is never read: closing the response drops the connection.
            raise _UnusableAnswerError(f"answer over {limit_bytes} bytes")
    return bytes(buffer)


class _UnusableAnswerError(Exception):
    """The provider answered, but with nothing usable."""


def _describe(exc: BaseException | None) -> str:
    # Only the class name of a foreign error: its message may quote a request,
    # a response body or a header, and none of that belongs in a log line.
    if isinstance(exc, _UnusableAnswerError):
        return str(exc)
    return type(exc).__name__

"""``sakaibot verify``: check the whole chain against the configured services.

One line per check, a diagnosis for each failure, exit code 1 when any check
failed. ``scripts/verify_image_generation.py`` runs the same thing.

The Telegram side is checked offline (the app id and hash, a readable session
made for the configured server); ``--telegram`` also connects and says which
account the session is logged in as.
"""

from __future__ import annotations

import time
from typing import TextIO

from sakaibot.enhancer import ORIGINAL_PROMPT
from sakaibot.errors import ConfigError, GenerationError, SakaiBotError, TelegramUnreachable
from sakaibot.generation import GenerationParams
from sakaibot.settings import Settings

VERIFY_PROMPT = "a red fox in the snow, verification image"


async def run_verify(settings: Settings, out: TextIO, *, telegram: bool = False) -> int:
    from sakaibot.enhancer.llm import LlmEnhancer, providers_from_settings
    from sakaibot.workers.client import WorkerClient, build_http_client

    failures = 0

    def line(ok: bool | None, text: str) -> None:
        mark = "✓" if ok else ("–" if ok is None else "✗")
        out.write(f"{mark} {text}\n")

    registry = settings.model_registry()
    for warning in settings.configuration_warnings():
        line(False, f"settings: {warning}")
        failures += 1
    if not registry:
        line(False, "settings: no image worker configured; set FLUX_WORKER_URL or SDXL_WORKER_URL")
        failures += 1
    else:
        line(True, f"settings: models {', '.join(registry.names())}")

    providers = providers_from_settings(settings)
    if not providers:
        if settings.llm_provider == "none":
            line(None, "LLM: turned off (LLM_PROVIDER=none); prompts are used as written")
        else:
            line(
                None,
                "LLM: none configured; prompts are used as written "
                "(set OPENROUTER_API_KEY or GEMINI_API_KEY to improve them)",
            )
    for provider in providers:
        enhancer = LlmEnhancer([provider], timeout_s=settings.enhancer_timeout_s, max_chars=1500)
        try:
            started_s = time.monotonic()
            enhanced = await enhancer.enhance("a red fox in the snow")
            took_s = time.monotonic() - started_s
        finally:
            await enhancer.aclose()
        if enhanced.source == ORIGINAL_PROMPT:
            failures += 1
            line(
                False,
                f"LLM {provider.name} ({provider.model}): no usable answer; check its API key, "
                "the model name and the network (run with -v for the error)",
            )
        else:
            line(True, f"LLM {provider.name} ({provider.model}): answered in {took_s:.1f} s")

    http = build_http_client(
        connect_timeout_s=settings.worker_connect_timeout_s,
        read_timeout_s=settings.worker_read_timeout_s,
    )
    client = WorkerClient(
        http,
        max_image_bytes=settings.image_max_bytes,
        retry_budget_s=min(settings.worker_retry_budget_s, 60.0),
        max_attempts=2,
    )
    try:
        for model in registry:
            started_s = time.monotonic()
            try:
                image = await client.fetch_image(model, GenerationParams(prompt=VERIFY_PROMPT))
            except GenerationError as exc:
                failures += 1
                line(False, f"worker {model.name}: {exc.kind}: {exc.detail}. {exc.user_message}")
                continue
            took_s = time.monotonic() - started_s
            fmt = image.extension.lstrip(".").upper()
            line(
                True,
                f"worker {model.name}: {image.width}×{image.height} {fmt}, "
                f"{image.size_bytes / 1024:.0f} KB in {took_s:.1f} s",
            )
    finally:
        await http.aclose()

    for ok, text in await _telegram_checks(settings, connect=telegram):
        line(ok, text)
        failures += ok is False
    out.write("All checks passed.\n" if failures == 0 else f"{failures} check(s) failed.\n")
    return 0 if failures == 0 else 1


async def _telegram_checks(settings: Settings, *, connect: bool) -> list[tuple[bool | None, str]]:
    """The Telegram lines: offline always, a real connection only with ``connect``."""
    problems = settings.telegram_problems()
    if problems and len(problems) == 2 and not connect:
        # The console alone needs no Telegram; say what `login` and `run` will need.
        return [
            (
                None,
                "Telegram: not set up (TELEGRAM_API_ID, TELEGRAM_API_HASH); needed only by "
                "`sakaibot login` and `sakaibot run`",
            )
        ]
    if problems:
        return [(False, f"Telegram: {problem}") for problem in problems]
    from sakaibot.chat import telegram

    checks: list[tuple[bool | None, str]] = [
        (True, "Telegram: TELEGRAM_API_ID and TELEGRAM_API_HASH are set")
    ]
    key_path = settings.telegram_server_public_key
    if key_path is not None:
        # The settings only saw that the file is there; what it holds is read here,
        # as `run` and `login` will read it.
        try:
            telegram.read_server_public_key(key_path)
        except ValueError as exc:
            checks.append((False, f"Telegram: TELEGRAM_SERVER_PUBLIC_KEY: {exc}"))
        else:
            checks.append((True, "Telegram: TELEGRAM_SERVER_PUBLIC_KEY holds an RSA public key"))
    session = telegram.check_session_offline(settings)
    # Asked to check the login, a missing one is a failure, not just a hint.
    checks.append(
        (False if connect and session.ok is None else session.ok, f"Telegram: {session.text}")
    )
    if connect and session.ok:
        try:
            checks.append((True, f"Telegram: {await telegram.describe_login(settings)}"))
        except ConfigError as exc:
            checks.extend((False, f"Telegram: {problem}") for problem in exc.problems)
        except TelegramUnreachable as exc:
            checks.append((False, f"Telegram: {exc.user_message}"))
        except SakaiBotError as exc:  # Telegram refused: e.g. a session logged out elsewhere
            checks.append((False, f"Telegram: {exc}; log in again with `sakaibot login`"))
    return checks

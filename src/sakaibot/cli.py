"""The ``sakaibot`` command line: parse arguments, build the settings once, run a front end.

Heavy libraries (httpx, openai, Pillow, Telethon) are imported only by the
subcommand that needs them, so ``sakaibot --help`` starts fast.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import secrets
import stat
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from sakaibot.devworker import DevWorker
    from sakaibot.quota import BudgetUse
    from sakaibot.settings import Settings

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_CONFIG = 2

NO_WORKER_MESSAGE = (
    "No image worker is configured, so there is nothing to generate with.\n"
    "Fix: set FLUX_WORKER_URL (and/or SDXL_WORKER_URL with SDXL_API_KEY) in .env "
    "(see .env.example),\n"
    "or try everything offline with the bundled development worker: sakaibot chat --local"
)


#: Where ``chat --local`` keeps its data, inside its ``--out`` folder: never the
#: bot's data folder, so the demo's users, history and preview images stay out of it.
LOCAL_DATA_DIR_NAME = "local-data"
#: The longest `sakaibot worker` waits, after a second Ctrl-C, for its lanes to stop.
_WORKER_STOP_S = 5.0

_ENV_FILE_HELP = "settings file to read besides the environment (default: .env; 'none': no file)"
_VERBOSE_HELP = "log more (DEBUG)"


def _shared_options() -> argparse.ArgumentParser:
    """``-v`` and ``--env-file``, accepted after the subcommand too (``sakaibot run -v``).

    Their default is SUPPRESS, so a subcommand that does not repeat them keeps
    the value given before it.
    """
    shared = argparse.ArgumentParser(add_help=False)
    shared.add_argument("--env-file", type=Path, default=argparse.SUPPRESS, help=_ENV_FILE_HELP)
    shared.add_argument(
        "-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help=_VERBOSE_HELP
    )
    return shared


def _build_parser() -> argparse.ArgumentParser:
    from sakaibot import __version__

    parser = argparse.ArgumentParser(
        prog="sakaibot",
        description="Turn /image=flux=<prompt> into an image through your own workers.",
    )
    parser.add_argument("--env-file", type=Path, default=Path(".env"), help=_ENV_FILE_HELP)
    parser.add_argument("-v", "--verbose", action="store_true", help=_VERBOSE_HELP)
    parser.add_argument(
        "--version", action="version", version=f"%(prog)s {__version__}", help="print the version"
    )
    shared = [_shared_options()]
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    chat = commands.add_parser(
        "chat", parents=shared, help="talk to the bot on this terminal (one line = one message)"
    )
    chat.add_argument(
        "--local",
        action="store_true",
        help=(
            "start the development worker and use it; data is kept in OUT/"
            f"{LOCAL_DATA_DIR_NAME}, never in SAKAIBOT_DATA_DIR"
        ),
    )
    chat.add_argument("--jsonl", action="store_true", help="print one JSON object per event")
    chat.add_argument("--out", type=Path, default=Path("out"), help="where images go (./out)")
    chat.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help=(
            "keep jobs, history and the cache here instead (default: SAKAIBOT_DATA_DIR; "
            f"with --local OUT/{LOCAL_DATA_DIR_NAME})"
        ),
    )
    _add_local_worker_flags(chat)

    worker = commands.add_parser(
        "dev-worker",
        parents=shared,
        help="run the development worker (both worker contracts) on 127.0.0.1",
    )
    worker.add_argument(
        "--port", type=int, default=8787, help="port to listen on (default: 8787; 0: any free)"
    )
    worker.add_argument(
        "--latency-ms", type=int, default=0, help="wait this long before each image (default: 0)"
    )
    worker.add_argument(
        "--llm-latency-ms",
        type=int,
        default=0,
        help="the stand-in LLM waits this long before each answer (default: 0)",
    )
    worker.add_argument(
        "--fail-rate",
        type=float,
        default=0.0,
        help="share of image requests, 0 to 1, that fail with --fail-status (default: 0)",
    )
    worker.add_argument(
        "--fail-status",
        type=int,
        default=503,
        help="HTTP status of those failures (default: 503)",
    )
    worker.add_argument("--api-key", default=None, help="bearer token POST /sdxl requires")
    worker.add_argument(
        "--fast", action="store_true", help="serve a small pre-rendered image (load tests)"
    )
    worker.add_argument(
        "--fault",
        default="ok",
        metavar="NAME[*N]",
        help=(
            "answer every image request with this fault (default: ok), e.g. 503, 429-quota, "
            "500-nsfw, retry-after, timeout, reset, truncated, text, json, oversized, trickle; "
            "NAME*N: only the first N requests per prompt. A request picks its own with the "
            "X-SakaiBot-Fault header, ?fault=NAME or [fault:NAME] in the prompt"
        ),
    )
    worker.add_argument(
        "--oversized-bytes",
        type=int,
        default=30_000_000,
        help="body size of the 'oversized' fault (default: 30000000)",
    )
    worker.add_argument(
        "--trickle-delay-ms",
        type=int,
        default=200,
        help="pause between the pieces of the 'trickle' fault (default: 200)",
    )

    generate = commands.add_parser(
        "generate", parents=shared, help="generate one image into a file, no chat"
    )
    generate.add_argument("model", help="a configured model, e.g. flux")
    generate.add_argument("prompt", help="the prompt; flags like --ar 16:9 may follow inside it")
    generate.add_argument(
        "-o",
        "--output",
        type=Path,
        required=True,
        help="the image file; its suffix is set to the image's real format",
    )
    generate.add_argument("--local", action="store_true", help="use the development worker")
    _add_local_worker_flags(generate)

    commands.add_parser(
        "worker",
        parents=shared,
        help="generate images for every front end sharing REDIS_URL (no chat of its own)",
    )

    login = commands.add_parser(
        "login",
        parents=shared,
        help="log in to Telegram once (phone, code, 2FA) or with a bot token",
    )
    login.add_argument(
        "--bot-token",
        nargs="?",
        const="",
        default=None,
        metavar="TOKEN",
        help="log in as a bot; without TOKEN it is read from TELEGRAM_BOT_TOKEN or asked for",
    )
    login.add_argument(
        "--string-session",
        action="store_true",
        help="also print a string session for TELEGRAM_SESSION (containers)",
    )
    commands.add_parser(
        "run", parents=shared, help="run the bot on Telegram until Ctrl-C or SIGTERM"
    )

    verify = commands.add_parser(
        "verify",
        parents=shared,
        help="check settings, reach every worker and LLM, generate one image per model",
    )
    verify.add_argument(
        "--telegram",
        action="store_true",
        help="also connect to Telegram and say which account the session is logged in as",
    )

    stats = commands.add_parser(
        "stats", parents=shared, help="usage statistics from the data directory"
    )
    stats.add_argument(
        "--days", type=_positive_int, default=7, help="how many days back (default: 7)"
    )
    stats.add_argument("--json", action="store_true", help="print JSON instead of text")

    history = commands.add_parser(
        "history", parents=shared, help="the most recent jobs from the data directory"
    )
    history.add_argument("--user", default=None, help="only this user's jobs (default: everyone)")
    history.add_argument(
        "--limit", type=_positive_int, default=10, help="how many jobs (default: 10)"
    )
    history.add_argument("--json", action="store_true", help="print JSON instead of text")
    return parser


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _add_local_worker_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--worker-latency-ms",
        type=int,
        default=0,
        help="with --local: the development worker waits this long per image (default: 0)",
    )
    parser.add_argument(
        "--llm-latency-ms",
        type=int,
        default=0,
        help="with --local: the stand-in LLM waits this long per answer (default: 0)",
    )
    parser.add_argument(
        "--worker-fail-rate",
        type=float,
        default=0.0,
        help="with --local: share of images, 0 to 1, that fail (default: 0)",
    )
    parser.add_argument(
        "--worker-fail-status",
        type=int,
        default=503,
        help="with --local: HTTP status of those failures (default: 503)",
    )


def _configure_logging(verbose: bool, level_name: str, *, quiet: bool, command: str) -> None:
    level = logging.DEBUG if verbose else getattr(logging, level_name)
    if quiet and not verbose:
        level = max(level, logging.WARNING)
    logging.basicConfig(
        level=level,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # httpx logs every URL at INFO; a GET worker's URL carries the user's prompt.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)
    if command == "login" and not verbose:
        # Telethon logs on import ("libssl detected"), before ``login`` quiets its client:
        # nothing of it belongs between the prompts.
        logging.getLogger("telethon").setLevel(logging.ERROR)


def _start_local_worker(args: argparse.Namespace) -> tuple[DevWorker, dict[str, Any]]:
    """Start the development worker on a free port; returns settings that point at it."""
    from sakaibot.devworker import DevWorker, DevWorkerConfig

    api_key = secrets.token_urlsafe(16)
    worker = DevWorker(
        DevWorkerConfig(
            port=0,
            latency_ms=args.worker_latency_ms,
            llm_latency_ms=args.llm_latency_ms,
            fail_rate=args.worker_fail_rate,
            fail_status=args.worker_fail_status,
            api_key=api_key,
        )
    )
    base_url = worker.start()
    overrides: dict[str, Any] = {
        "flux_worker_url": f"{base_url}/flux",
        "sdxl_worker_url": f"{base_url}/sdxl",
        "sdxl_api_key": api_key,
        # Used only when no real LLM is configured: the demo enhances offline too.
        "llm_dev_url": f"{base_url}/v1",
    }
    return worker, overrides


def _chat_data(args: argparse.Namespace) -> dict[str, Any]:
    """Where ``sakaibot chat`` keeps its data, as settings overrides.

    With ``--local`` the development worker's preview images, its made-up users
    and their history must never reach a live bot: they go to a folder of their
    own beside the images, and no shared Redis is joined.
    """
    overrides: dict[str, Any] = {}
    if args.local:
        overrides["sakaibot_data_dir"] = args.out / LOCAL_DATA_DIR_NAME
        overrides["redis_url"] = None
    if args.data_dir is not None:
        overrides["sakaibot_data_dir"] = args.data_dir
    return overrides


def _load(args: argparse.Namespace, overrides: dict[str, Any]) -> Settings:
    from sakaibot.settings import load_settings

    env_file = args.env_file if args.env_file.name != "none" else None
    return load_settings(env_file=env_file, **overrides)


async def _read_lines(stream: TextIO) -> Any:
    """Yield input lines without blocking the event loop; an overlong line is
    yielded as an :class:`~sakaibot.chat.console.OverlongLine`, never raised."""
    from sakaibot.chat.console import MAX_LINE_BYTES, read_file_line, read_stream_lines

    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=MAX_LINE_BYTES)
    mode = os.fstat(stream.fileno()).st_mode
    if not (stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or stream.isatty()):
        # A regular file (``< script.txt``) or /dev/null cannot be watched by the
        # event loop; reading it never blocks long.
        while (line := read_file_line(stream.buffer)) is not None:
            yield line
            await asyncio.sleep(0)
        return
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), stream)
    async for line in read_stream_lines(reader):
        yield line
        # A pipe that already holds the whole script would otherwise be read
        # without giving queued jobs a turn, unlike messages arriving in a chat.
        await asyncio.sleep(0)


def _worker_lines(settings: Settings, *, local: bool) -> list[str]:
    """Each model and where its worker is (host and port only: a URL may carry a token)."""
    lines: list[str] = []
    for model in settings.model_registry():
        parts = urlsplit(model.url)
        where = f"{parts.hostname}:{parts.port}" if parts.port else str(parts.hostname)
        kind = "the development worker" if local else f"{parts.scheme}://"
        at = " at " if local else ""
        lines.append(f"{model.name} ({model.display_name}) on {kind}{at}{where}")
    return lines


def _llm_line(settings: Settings) -> str:
    """Which LLM improves prompts, as ``build_app`` chooses it."""
    from sakaibot.app import llm_providers

    providers = llm_providers(settings)
    if not providers:
        return "none: prompts are used as written"
    return ", falling back to ".join(f"{p.name} ({p.model})" for p in providers)


async def _run_terminal_chat(args: argparse.Namespace, settings: Settings, out: TextIO) -> int:
    """``sakaibot chat`` on a terminal: a prompt, history and a banner (chat/terminal.py)."""
    from sakaibot.app import build_app
    from sakaibot.chat.terminal import Terminal, banner_text

    terminal = Terminal(
        out,
        out_dir=args.out,
        data_dir=settings.sakaibot_data_dir,
        handle=lambda m: app.bot.handle(m),
    )
    app = build_app(settings, terminal.chat, on_outcome=terminal.chat.outcome)
    await app.start()
    try:
        await terminal.read_until_end(
            banner_text(_worker_lines(settings, local=args.local), _llm_line(settings))
        )
        pending = app.queues.live_job_count() + len(app.pipeline.delivering())
        finished = await terminal.wait_for_jobs(pending, app.drain)
    finally:
        await app.aclose()
        terminal.close()
    if finished:
        out.write(f"Done. Images are in {args.out.resolve()}\n")
    return EXIT_OK


async def _run_chat(args: argparse.Namespace, settings: Settings, out: TextIO) -> int:
    from sakaibot.app import build_app
    from sakaibot.chat.console import ConsoleChat, OverlongLine

    if not args.jsonl and out is sys.stdout and sys.stdin.isatty() and out.isatty():
        return await _run_terminal_chat(args, settings, out)

    console = ConsoleChat(
        out, out_dir=args.out, jsonl=args.jsonl, echo_input=not sys.stdin.isatty()
    )
    app = build_app(settings, console, on_outcome=console.outcome)
    await app.start()
    try:
        async for line in _read_lines(sys.stdin):
            if isinstance(line, OverlongLine):
                await console.refuse_line(line)
                continue
            message = console.incoming(line)
            if message is not None:
                await app.bot.handle(message)
        await app.drain()
    finally:
        await app.aclose()
    if not args.jsonl:
        out.write(f"Done. Images are in {args.out.resolve()}\n")
    return EXIT_OK


async def _run_worker(settings: Settings, out: TextIO) -> int:
    import signal

    from sakaibot.app import build_generator
    from sakaibot.errors import ConfigError
    from sakaibot.shared.backend import RedisBackend
    from sakaibot.shared.worker import GenerationWorker
    from sakaibot.stopping import stop_tasks

    if settings.redis_url is None:
        raise ConfigError(
            ["REDIS_URL is not set: `sakaibot worker` takes its work from the Redis that "
             "the front ends share, e.g. REDIS_URL=redis://127.0.0.1:6379/0"]
        )  # fmt: skip
    closers: list[Any] = []
    backend = RedisBackend(
        settings.redis_url.get_secret_value(),
        prefix=settings.redis_prefix,
        cache_max_bytes=settings.redis_cache_max_bytes,
    )
    await backend.open()
    worker = GenerationWorker(
        backend,
        settings.model_registry(),
        build_generator(settings, closers),
        lease_s=settings.redis_lease_s,
    )
    stop, stop_now = asyncio.Event(), asyncio.Event()

    def on_signal() -> None:
        # The first stop lets the images in hand finish (they are paid for);
        # a second one stops at once, and another worker takes them over.
        if stop.is_set():
            stop_now.set()
            return
        stop.set()
        out.write("Stopping after the images in hand; Ctrl-C again to stop now.\n")
        out.flush()

    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, on_signal)
    names = ", ".join(settings.model_registry().names())
    out.write(f"SakaiBot worker {worker.worker_id} generating for {names}. Ctrl-C stops it.\n")
    out.flush()
    running = asyncio.create_task(worker.run(stop), name="worker")
    hurry = asyncio.create_task(stop_now.wait(), name="worker-stop-now")
    try:
        await asyncio.wait({running, hurry}, return_when=asyncio.FIRST_COMPLETED)
        if not running.done():
            await stop_tasks([running], timeout_s=_WORKER_STOP_S, what="worker")
            out.write(
                f"Stopped after {worker.done} image(s); the ones in hand go to another "
                f"worker after REDIS_LEASE_S ({settings.redis_lease_s:g} s).\n"
            )
            return EXIT_OK
        running.result()  # an unexpected failure of the worker itself
    finally:
        hurry.cancel()
        for close in closers:
            await close()
        await backend.close()
    out.write(f"Stopped after {worker.done} image(s).\n")
    return EXIT_OK


async def _run_login(args: argparse.Namespace, settings: Settings, out: TextIO) -> int:
    import getpass

    from sakaibot.chat import telegram
    from sakaibot.errors import LoginFailed

    bot_token: str | None = args.bot_token
    if bot_token == "":
        secret = settings.telegram_bot_token
        try:
            bot_token = (
                secret.get_secret_value()
                if secret is not None
                else getpass.getpass("Bot token from @BotFather: ")
            )
        except EOFError:  # no terminal to ask on
            raise LoginFailed("input_ended") from None
    return await telegram.login(
        settings,
        out,
        bot_token=bot_token,
        string_session=args.string_session,
        verbose=args.verbose,
    )


async def _run_generate(args: argparse.Namespace, settings: Settings, out: TextIO) -> int:
    from sakaibot.app import build_app
    from sakaibot.chat.console import ConsoleChat

    # One command through the very same pipeline; the console port writes the
    # image to the requested file, its suffix set by the real format.
    output: Path = args.output
    console = ConsoleChat(
        out, out_dir=output.parent, jsonl=False, echo_input=False, image_path=output
    )
    outcomes: list[Any] = []
    # A one-off image has nothing to recover and must not pick up a running
    # bot's jobs: it works in a scratch data folder of its own.
    with tempfile.TemporaryDirectory(prefix="sakaibot-generate-") as scratch:
        # And it generates here: it must not join (or wait on) a shared queue.
        settings = settings.model_copy(
            update={"sakaibot_data_dir": Path(scratch), "redis_url": None}
        )
        app = build_app(
            settings, console, on_outcome=outcomes.append, edit_interval_s=lambda _: 0.0
        )
        await app.start()
        try:
            message = console.incoming(f"/image={args.model}={args.prompt}")
            assert message is not None
            await app.bot.handle(message)
            await app.drain()
        finally:
            await app.aclose()
    ok = bool(outcomes) and all(outcome.ok for outcome in outcomes)
    return EXIT_OK if ok else EXIT_FAILED


async def _shared_budget_uses(settings: Settings) -> list[BudgetUse] | None:
    """Every front end's budget use today, from Redis; ``None`` when it cannot be reached
    (the figures are then this front end's own, from its store, and a line says so)."""
    import time

    from sakaibot.errors import StoreUnavailable
    from sakaibot.quota import budget_limits
    from sakaibot.shared.backend import RedisBackend
    from sakaibot.shared.budgets import SharedBudgets
    from sakaibot.shared.outage import OutageLog

    assert settings.redis_url is not None
    registry = settings.model_registry()
    backend = RedisBackend(settings.redis_url.get_secret_value(), prefix=settings.redis_prefix)
    shared = SharedBudgets(
        backend, budget_limits(registry), registry.names(), time.time, outage=OutageLog()
    )
    try:
        await backend.open()
        await shared.load()
    except StoreUnavailable as exc:
        sys.stderr.write(f"Budgets counted by this front end only: {exc}\n")
        return None
    finally:
        await backend.close()
    return shared.uses(registry.names())


async def _run_report(args: argparse.Namespace, settings: Settings, out: TextIO) -> int:
    """``sakaibot stats`` / ``sakaibot history``: read the store, print text or JSON."""
    import json
    import time

    from sakaibot import reports
    from sakaibot.quota import DAY_S, uses_from_records, utc_day
    from sakaibot.store.sqlite import SqliteStore

    data_dir = settings.sakaibot_data_dir
    path = data_dir / "sakaibot.db"
    if not path.is_file():
        # Opening would create an empty database; there is nothing to report yet.
        message = f"No data yet in {data_dir} (SAKAIBOT_DATA_DIR).\n"
        if not args.json:
            out.write(message)
            return EXIT_OK
        sys.stderr.write(message)
        empty: Any = (
            reports.stats_to_json(reports.compute_stats([], days=args.days, queue=[]))
            if args.command == "stats"
            else []
        )
        out.write(json.dumps(empty, indent=2, ensure_ascii=False) + "\n")
        return EXIT_OK

    now_s = time.time()
    store = SqliteStore(path, exclusive=False)  # reading beside a running bot is fine
    await store.open()
    try:
        if args.command == "stats":
            records = await store.jobs_since(now_s - args.days * DAY_S)
            # --days is at least 1: today's jobs are among those already read.
            midnight_s = utc_day(now_s) * DAY_S
            today = [record for record in records if record.created_at_s >= midnight_s]
            budgets = uses_from_records(settings.model_registry(), today, now_s)
            if settings.redis_url is not None:
                budgets = await _shared_budget_uses(settings) or budgets
        elif args.user is not None:
            records = await store.history(args.user, args.limit)
        else:
            records = (await store.jobs_since(0))[-args.limit :][::-1]
    finally:
        await store.close()

    if args.command == "stats":
        # Queue lengths live in the running bot only; the text says so.
        stats = reports.compute_stats(records, days=args.days, queue=[], budgets=budgets)
        data: Any = reports.stats_to_json(stats)
        text = reports.format_stats(stats)
    else:
        data = reports.history_to_json(records)
        text = reports.format_history(records, now_s=now_s, owner_view=True)
    if args.json:
        out.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    else:
        out.write(text + "\n")
    return EXIT_OK


def main(argv: Sequence[str] | None = None, *, out: TextIO | None = None) -> int:
    """Entry point of the ``sakaibot`` console script; returns the exit code."""
    out = out or sys.stdout
    args = _build_parser().parse_args(argv)
    from sakaibot.errors import ConfigError, SakaiBotError, StoreUnavailable

    worker: DevWorker | None = None
    try:
        if args.command == "dev-worker":
            return _run_dev_worker(args)
        overrides: dict[str, Any] = {}
        if getattr(args, "local", False):
            worker, overrides = _start_local_worker(args)
        if args.command == "chat":
            overrides.update(_chat_data(args))
        settings = _load(args, overrides)
        _configure_logging(
            args.verbose, settings.log_level, quiet=args.command == "chat", command=args.command
        )
        if args.command in {"chat", "generate", "run"}:
            for warning in settings.configuration_warnings():
                sys.stderr.write(f"Warning: {warning}\n")
        if args.command == "login":
            return asyncio.run(_run_login(args, settings, out))
        if args.command == "verify":
            from sakaibot.verify import run_verify

            return asyncio.run(run_verify(settings, out, telegram=args.telegram))
        if args.command in {"stats", "history"}:
            # Read from the data directory only: no worker needs to be configured.
            return asyncio.run(_run_report(args, settings, out))
        if args.command == "run":
            problems = settings.telegram_problems()
            if not settings.model_registry():
                problems.append(
                    "no image worker is configured: set FLUX_WORKER_URL (and/or "
                    "SDXL_WORKER_URL with SDXL_API_KEY); see .env.example"
                )
            if problems:
                raise ConfigError(problems)
        if not settings.model_registry():
            sys.stderr.write(NO_WORKER_MESSAGE + "\n")
            return EXIT_CONFIG
        if args.command == "chat":
            return asyncio.run(_run_chat(args, settings, out))
        if args.command == "generate":
            return asyncio.run(_run_generate(args, settings, out))
        if args.command == "run":
            from sakaibot.chat import telegram

            return asyncio.run(telegram.run(settings, out))
        if args.command == "worker":
            return asyncio.run(_run_worker(settings, out))
        raise AssertionError(f"unhandled command {args.command}")
    except ConfigError as exc:
        sys.stderr.write(exc.user_message + "\n")
        return EXIT_CONFIG
    except StoreUnavailable as exc:
        # The chat message is for users; the operator needs the reason.
        sys.stderr.write(f"SakaiBot cannot use its data: {exc}\n")
        return EXIT_CONFIG
    except SakaiBotError as exc:
        sys.stderr.write(exc.user_message + "\n")
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130
    finally:
        if worker is not None:
            worker.stop()


def _run_dev_worker(args: argparse.Namespace) -> int:
    from sakaibot.devworker import DevWorker, DevWorkerConfig

    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(message)s")
    try:
        config = DevWorkerConfig(
            port=args.port,
            latency_ms=args.latency_ms,
            llm_latency_ms=args.llm_latency_ms,
            fail_rate=args.fail_rate,
            fail_status=args.fail_status,
            api_key=args.api_key,
            fast=args.fast,
            fault=args.fault,
            oversized_bytes=args.oversized_bytes,
            trickle_delay_ms=args.trickle_delay_ms,
        )
    except ValueError as exc:
        sys.stderr.write(f"sakaibot dev-worker: {exc}\n")
        return EXIT_CONFIG
    worker = DevWorker(config)

    def announce(url: str) -> None:
        fault = "" if config.fault == "ok" else f" Every image request gets fault {config.fault}."
        sys.stderr.write(
            f"Development worker on {url}: GET /flux?prompt=…  POST /sdxl "
            "(labelled previews, not real generation); development LLM at "
            f"{url}/v1 (POST /v1/chat/completions).{fault} Ctrl-C stops it.\n"
        )

    worker.serve_forever(on_ready=announce)
    return EXIT_OK

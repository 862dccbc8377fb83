"""The one settings object, read from the environment (and ``.env``) once and passed down.

Variable names of the original design are kept (``FLUX_WORKER_URL``,
``SDXL_API_KEY``, ...). Every key is a :class:`~pydantic.SecretStr`, so it
never shows in a log line, a repr or a traceback. Nothing else in the package
reads ``os.environ``.
"""

from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    HttpUrl,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from sakaibot.errors import ConfigError
from sakaibot.limits import RateWindow, parse_limit_spec
from sakaibot.models import (
    BUILTIN_MODELS,
    MODEL_OPTIONS,
    Contract,
    ModelRegistry,
    ModelSpec,
)

#: The original design's limit: 10 requests per 60 s sliding window.
DEFAULT_USER_LIMITS = "10/1m"

#: ``TELEGRAM_SERVER``: ``DC_ID@HOST:PORT``, an IPv6 host in brackets.
_SERVER_FORMAT = re.compile(r"(?P<dc>[0-9]+)@(?P<host>\[[^\[\]]*\]|[^\[\]@:]+):(?P<port>[0-9]+)")
_HOST_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")
#: A PEM public key is well under a kilobyte; anything this large is not one.
MAX_PUBLIC_KEY_FILE_BYTES = 64 * 1024
#: ``IMAGE_MODELS`` names: they become file names and command words, so nothing
#: that could leave a folder (``../x``) or hide in a command.
MODEL_NAME_FORMAT = re.compile(r"[a-z0-9_-]{1,32}")
MODEL_NAME_RULE = "a model name is 1 to 32 lowercase letters, digits, - or _ (e.g. turbo-xl)"
#: A ``.env`` larger than this is not a settings file someone wrote.
MAX_ENV_FILE_BYTES = 1024 * 1024
_REDIS_URL_FORM = "redis://[:password@]host:port/db, e.g. redis://localhost:6379/0"
#: What to give instead of a wrong ``TELEGRAM_SERVER_PUBLIC_KEY``.
PUBLIC_KEY_HINT = (
    "give the path of the server's RSA public key, a PEM file that starts with "
    "-----BEGIN RSA PUBLIC KEY----- or -----BEGIN PUBLIC KEY-----"
)


@dataclass(frozen=True)
class TelegramServer:
    """A data centre other than Telegram's production ones (``TELEGRAM_SERVER``).

    ``host`` is bare: an IPv6 address without brackets (as Telethon takes it),
    an IP address in its compressed form, a host name in lower case.
    """

    dc_id: int
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> TelegramServer:
        """``DC_ID@HOST:PORT``, or :class:`ValueError` with one line saying what is wrong."""
        value = text.strip()
        problem = (
            f"{value!r} is not DC_ID@HOST:PORT, e.g. 2@149.154.167.40:443 for "
            "Telegram's test environment"
        )
        match = _SERVER_FORMAT.fullmatch(value)
        if match is None:
            raise ValueError(problem)
        dc_text, host, port_text = match.group("dc", "host", "port")
        if len(dc_text) > 4 or not 1 <= int(dc_text) <= 1000:
            raise ValueError(f"{problem} (the DC id is a number from 1 to 1000)")
        if len(port_text) > 5 or not 1 <= int(port_text) <= 65535:
            raise ValueError(f"{problem} (the port is a number from 1 to 65535)")
        bare = _server_host(host)
        if bare is None:
            raise ValueError(
                f"{problem} (the host is an IPv4 address, a host name, or an IPv6 address "
                "in brackets like [::1])"
            )
        return cls(dc_id=int(dc_text), host=bare, port=int(port_text))

    @property
    def is_ipv6(self) -> bool:
        return ":" in self.host

    @property
    def is_ip(self) -> bool:
        """Whether the host is an IP address (a string session can hold nothing else)."""
        try:
            ipaddress.ip_address(self.host)
        except ValueError:
            return False
        return True

    @property
    def address(self) -> str:
        """``HOST:PORT``, an IPv6 host in brackets."""
        host = f"[{self.host}]" if self.is_ipv6 else self.host
        return f"{host}:{self.port}"

    def __str__(self) -> str:
        return f"{self.dc_id}@{self.address}"


def _server_host(host: str) -> str | None:
    """The bare, normalised host of ``TELEGRAM_SERVER``, or ``None`` when it is not one."""
    if host.startswith("["):
        try:
            return ipaddress.IPv6Address(host[1:-1]).compressed
        except ValueError:
            return None
    if re.fullmatch(r"[0-9.]+", host):  # looks like IPv4, so it must be a valid one
        try:
            return ipaddress.IPv4Address(host).compressed
        except ValueError:
            return None
    name = host.removesuffix(".")
    if len(name) > 253 or not all(_HOST_LABEL.fullmatch(label) for label in name.split(".")):
        return None
    return name.lower()


def read_server_key_file(path: Path) -> bytes:
    """The start of ``path``: at most :data:`MAX_PUBLIC_KEY_FILE_BYTES` + 1 bytes.

    Only whether the file is there and can be read is checked here, so a
    misspelt path is found when the settings are read. Whether the bytes hold
    an RSA public key is for the Telegram adapter to judge: it parses them with
    the ``rsa`` library when it builds the client, before anything connects.
    A :class:`ValueError` says in one line what is wrong and what to do.
    """
    try:
        if not path.exists():
            raise ValueError(f"there is no file {path}; {PUBLIC_KEY_HINT}")
        if path.is_dir():
            raise ValueError(f"{path} is a folder, not a file; {PUBLIC_KEY_HINT}")
        if not path.is_file():
            raise ValueError(f"{path} is not a regular file; {PUBLIC_KEY_HINT}")
        with path.open("rb") as handle:
            return handle.read(MAX_PUBLIC_KEY_FILE_BYTES + 1)
    except PermissionError:
        raise ValueError(
            f"{path} cannot be read (permission denied); let the user that runs SakaiBot "
            f"read it, e.g. chmod 644 {path}"
        ) from None
    except OSError as exc:
        raise ValueError(
            f"{path} cannot be read ({exc.strerror or type(exc).__name__}); {PUBLIC_KEY_HINT}"
        ) from None


class ExtraModel(BaseModel):
    """One operator-defined model in ``IMAGE_MODELS`` (JSON)."""

    # A misspelt key ("apikey") must be an error, not a silently missing key.
    model_config = ConfigDict(extra="forbid")

    contract: Contract
    url: HttpUrl
    api_key: SecretStr | None = None
    options: list[str] = Field(default_factory=list)
    max_steps: int = Field(default=20, ge=1, le=100)
    concurrency: int = Field(default=1, ge=1, le=32)
    typical_duration_s: float = Field(default=10.0, gt=0)
    label: str = ""
    fallback: str | None = None
    #: Images a day (UTC) this model may make; unset is no budget.
    daily_budget: int | None = Field(default=None, ge=1)

    @field_validator("options")
    @classmethod
    def _known_options(cls, value: list[str]) -> list[str]:
        unknown = sorted(set(value) - MODEL_OPTIONS)
        if unknown:
            known = ", ".join(sorted(MODEL_OPTIONS))
            raise ValueError(f"unknown option(s) {', '.join(unknown)}; known: {known}")
        return value


class Settings(BaseSettings):
    """Every setting of SakaiBot. See ``.env.example`` for what each one means."""

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        case_sensitive=False,
        hide_input_in_errors=True,
        # `inf` as a timeout would mean "never"; say so instead of accepting it.
        allow_inf_nan=False,
        # `KEY=` lines copied from .env.example: an empty value means "not set",
        # so the default applies (LLM_PROVIDER= is openrouter, not an error).
        env_ignore_empty=True,
    )

    # Telegram (used by `sakaibot login` / `sakaibot run`).
    telegram_api_id: int | None = None
    telegram_api_hash: SecretStr | None = None
    #: A Telethon string session, instead of the session file in the data directory.
    telegram_session: SecretStr | None = None
    telegram_bot_token: SecretStr | None = None
    #: In bot mode, whose commands count as the owner's (a userbot's owner is itself).
    telegram_owner_id: int | None = None
    allowed_user_ids: Annotated[list[int], NoDecode] = Field(default_factory=list)
    allowed_chat_ids: Annotated[list[int], NoDecode] = Field(default_factory=list)
    shutdown_grace_s: float = Field(default=60.0, ge=0)
    #: Telegram's test environment or a self-hosted MTProto server; unset is production.
    telegram_server: Annotated[TelegramServer | None, NoDecode] = None
    #: The RSA public key (PEM) of a server whose key Telethon does not know.
    telegram_server_public_key: Path | None = None

    # Prompt enhancer.
    llm_provider: Literal["openrouter", "gemini", "none"] = "openrouter"
    openrouter_api_key: SecretStr | None = None
    openrouter_model: str = Field(default="openai/gpt-4o-mini", min_length=1)
    openrouter_base_url: str = Field(default="https://openrouter.ai/api/v1", min_length=1)
    gemini_api_key: SecretStr | None = None
    gemini_model: str = Field(default="gemini-2.0-flash", min_length=1)
    gemini_base_url: str = Field(
        default="https://generativelanguage.googleapis.com/v1beta/openai/", min_length=1
    )
    enhancer_timeout_s: float = Field(default=15.0, gt=0, le=300)
    #: How many waiting jobs per model have their prompt improved before their
    #: turn, so a model's slot only generates; 0 improves each prompt in its turn.
    enhance_ahead: int = Field(default=2, ge=0, le=32)
    #: Development only: an OpenAI-compatible URL used when no LLM key is set
    #: (`sakaibot chat --local` points it at the development worker's stand-in).
    llm_dev_url: str | None = None

    # Image workers.
    flux_worker_url: HttpUrl | None = None
    sdxl_worker_url: HttpUrl | None = None
    sdxl_api_key: SecretStr | None = None
    flux_concurrency: int = Field(default=1, ge=1, le=32)
    sdxl_concurrency: int = Field(default=1, ge=1, le=32)
    #: A model to use while flux (sdxl) is failing, e.g. FLUX_FALLBACK=sdxl.
    flux_fallback: str | None = None
    sdxl_fallback: str | None = None
    #: Consecutive "worker unavailable" failures that pause a model, and for how long.
    breaker_failure_threshold: int = Field(default=3, ge=1)
    breaker_cooldown_s: float = Field(default=60.0, ge=0)
    image_models: Annotated[dict[str, ExtraModel], NoDecode] = Field(default_factory=dict)
    worker_connect_timeout_s: float = Field(default=30.0, gt=0)
    worker_read_timeout_s: float = Field(default=120.0, gt=0)
    worker_retry_budget_s: float = Field(default=300.0, gt=0)
    worker_max_attempts: int = Field(default=4, ge=1, le=20)
    image_max_bytes: int = Field(default=20_000_000, ge=1024)
    #: The token the flux worker checks (the shipped worker's API_TOKEN), sent as
    #: `Authorization: Bearer`; unset sends none, for open workers.
    flux_api_key: SecretStr | None = None

    # Requests, limits and queues.
    image_prompt_max_chars: int = Field(default=1000, ge=1, le=10_000)
    image_user_limits: Annotated[list[RateWindow], NoDecode] = Field(
        default_factory=lambda: parse_limit_spec(DEFAULT_USER_LIMITS)
    )
    image_queue_max: int = Field(default=50, ge=1)
    #: 4, not 3: an album of the default IMAGE_MAX_PER_REQUEST must fit.
    image_user_max_pending: int = Field(default=4, ge=1)
    #: `--n`: how many images one request may ask for (an album holds at most 10).
    image_max_per_request: int = Field(default=4, ge=1, le=10)
    #: Refusals one user hears per window before one "slow down" and silence (0: all).
    image_rejection_replies: int = Field(default=3, ge=0, le=1000)
    image_rejection_window_s: float = Field(default=60.0, gt=0, le=86_400)

    # Languages (docs/image-generation/translations.md).
    #: What chats are answered in until one chooses its own with /image lang.
    bot_language: Literal["en", "fa"] = "en"

    # Status messages and delivery.
    status_edit_interval_s: float = Field(default=3.0, ge=0)
    status_edit_interval_group_s: float = Field(default=6.0, ge=0)
    delivery_max_wait_s: float = Field(default=300.0, ge=0)
    #: How long an image that could not be sent is kept for `/image retry`.
    undelivered_retention_s: float = Field(default=86_400.0, ge=0)

    # Several processes: shared rate windows and generation queues on Redis.
    #: redis://[:password@]host:port/db — unset keeps everything in this process.
    redis_url: SecretStr | None = None
    redis_prefix: str = Field(default="sakaibot", min_length=1)
    #: How long a worker holds a request before another may take it over.
    redis_lease_s: float = Field(default=120.0, gt=0)
    #: Whether `sakaibot run`/`chat` also generate (else only `sakaibot worker` does).
    redis_local_workers: bool = True
    #: How many of this front end's jobs per model may wait in the shared queue at once.
    redis_inflight_per_model: int = Field(default=20, ge=1)
    #: Bytes the shared result cache may hold in Redis; least recently used evicted first.
    redis_cache_max_bytes: int = Field(default=100_000_000, ge=1)

    # History and the result cache.
    history_retention_days: int = Field(default=90, ge=1)
    #: How long a result answers the same request again; 0 turns the cache off.
    cache_ttl_s: float = Field(default=86_400.0, ge=0)
    #: Disk kept for generated images (cache and /image resend), oldest evicted first.
    cache_max_bytes: int = Field(default=500_000_000, ge=0)

    # The quota guard and the operator's dashboard.
    #: All users' requests together, in the syntax of IMAGE_USER_LIMITS; unset is none.
    image_global_limits: Annotated[list[RateWindow], NoDecode] = Field(default_factory=list)
    #: Images a day (UTC) flux (sdxl) may make; unset is no budget.
    flux_daily_budget: int | None = Field(default=None, ge=1)
    sdxl_daily_budget: int | None = Field(default=None, ge=1)
    #: Serve /healthz and /metrics on this port; unset serves nothing.
    metrics_port: int | None = Field(default=None, ge=1, le=65_535)
    #: Where that port listens: the loopback interface unless told otherwise.
    metrics_host: str = Field(default="127.0.0.1", min_length=1)

    # Where state and images are kept.
    sakaibot_data_dir: Path = Path("data")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @model_validator(mode="before")
    @classmethod
    def _blank_is_unset(cls, data: Any) -> Any:
        # `KEY=` lines copied from .env.example: a value of only spaces means
        # "not set" too, so the default applies (env_ignore_empty drops "").
        if isinstance(data, dict):
            return {
                key: value
                for key, value in data.items()
                if not (isinstance(value, str) and not value.strip())
            }
        return data

    @field_validator("image_user_limits", mode="before")
    @classmethod
    def _parse_limits(cls, value: Any) -> Any:
        if isinstance(value, str):
            # An empty line copied from .env.example means "the default", not "off".
            return parse_limit_spec(value if value.strip() else DEFAULT_USER_LIMITS)
        return value

    @field_validator("image_global_limits", mode="before")
    @classmethod
    def _parse_global_limits(cls, value: Any) -> Any:
        return parse_limit_spec(value) if isinstance(value, str) else value

    @field_validator("redis_url")
    @classmethod
    def _redis_url_form(cls, value: SecretStr | None) -> SecretStr | None:
        # Never echo the value, nor a part of it: it may hold a password.
        if value is not None:
            problem = _redis_url_problem(value.get_secret_value())
            if problem is not None:
                raise ValueError(problem)
        return value

    @field_validator("redis_prefix")
    @classmethod
    def _redis_prefix_word(cls, value: str) -> str:
        if not all(char.isalnum() or char in "-_.:" for char in value):
            raise ValueError(f"{value!r} may only hold letters, digits and - _ . :")
        return value

    @field_validator("allowed_user_ids", "allowed_chat_ids", mode="before")
    @classmethod
    def _parse_ids(cls, value: Any) -> Any:
        if isinstance(value, str):
            parts = [part.strip() for part in value.replace(";", ",").split(",")]
            ids: list[int] = []
            for part in filter(None, parts):
                try:
                    ids.append(int(part))
                except ValueError:
                    raise ValueError(
                        f"{part!r} is not a numeric Telegram id; write ids separated by "
                        "commas, e.g. 12345678,-1001234567890"
                    ) from None
            return ids
        return value

    @field_validator("image_models", mode="before")
    @classmethod
    def _parse_models(cls, value: Any) -> Any:
        if isinstance(value, str):
            try:
                return json.loads(value) if value.strip() else {}
            except RecursionError:
                raise ValueError("nested too deeply; it is a JSON object of models") from None
        return value

    @field_validator("image_models")
    @classmethod
    def _model_names(cls, value: dict[str, ExtraModel]) -> dict[str, ExtraModel]:
        seen: set[str] = set()
        for name in value:
            key = name.lower()
            if not MODEL_NAME_FORMAT.fullmatch(key):
                shown = name if len(name) <= 40 else name[:39] + "…"
                raise ValueError(f"{shown!r} is not a valid model name; {MODEL_NAME_RULE}")
            if key in seen:
                raise ValueError(f"the model {key!r} is given twice (names ignore case)")
            seen.add(key)
        return value

    @field_validator("telegram_server", mode="before")
    @classmethod
    def _parse_server(cls, value: Any) -> Any:
        if isinstance(value, str):
            return TelegramServer.parse(value) if value.strip() else None
        return value

    @field_validator("telegram_server_public_key")
    @classmethod
    def _check_server_key(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        if value is None:
            return None
        # Absent from ``info.data`` when TELEGRAM_SERVER itself was invalid: said there.
        if "telegram_server" in info.data and info.data["telegram_server"] is None:
            raise ValueError(
                "is set but TELEGRAM_SERVER is not; a server key is only used with "
                "TELEGRAM_SERVER (set both, or neither for Telegram's production servers)"
            )
        try:
            path = value.expanduser()
        except RuntimeError:  # ~someone who has no home here: "no file ~someone/..." says it
            path = value
        read_server_key_file(path)
        return path

    def model_registry(self) -> ModelRegistry:
        """The models whose worker is configured: built-ins first, then ``IMAGE_MODELS``."""
        specs: list[ModelSpec] = []
        if self.flux_worker_url is not None:
            specs.append(
                _builtin(
                    "flux",
                    self.flux_worker_url,
                    self.flux_api_key,
                    self.flux_concurrency,
                    self.flux_fallback,
                    self.flux_daily_budget,
                )
            )
        # SDXL needs its key too, as in the original design.
        if self.sdxl_worker_url is not None and self.sdxl_api_key is not None:
            specs.append(
                _builtin(
                    "sdxl",
                    self.sdxl_worker_url,
                    self.sdxl_api_key,
                    self.sdxl_concurrency,
                    self.sdxl_fallback,
                    self.sdxl_daily_budget,
                )
            )
        for name, extra in self.image_models.items():
            specs.append(
                ModelSpec(
                    name=name.lower(),
                    contract=extra.contract,
                    url=str(extra.url),
                    api_key=extra.api_key,
                    options=frozenset(extra.options),
                    max_steps=extra.max_steps,
                    concurrency=extra.concurrency,
                    typical_duration_s=extra.typical_duration_s,
                    label=extra.label,
                    fallback=extra.fallback.lower() if extra.fallback else None,
                    daily_budget=extra.daily_budget,
                )
            )
        return ModelRegistry(specs)

    @property
    def session_path(self) -> Path:
        """Where the Telethon session file lives (Telethon adds ``.session``)."""
        return self.sakaibot_data_dir / "sakaibot"

    def telegram_problems(self) -> list[str]:
        """What is missing for `sakaibot login` / `sakaibot run`, one line per variable."""
        problems: list[str] = []
        where = "create an app at https://my.telegram.org (API development tools)"
        if self.telegram_api_id is None:
            problems.append(f"TELEGRAM_API_ID is not set: {where} and copy its api_id")
        if self.telegram_api_hash is None:
            problems.append(f"TELEGRAM_API_HASH is not set: {where} and copy its api_hash")
        return problems

    def configuration_warnings(self) -> list[str]:
        """Settings that are valid but probably not what the operator meant."""
        warnings: list[str] = []
        if self.sdxl_worker_url is not None and self.sdxl_api_key is None:
            warnings.append(
                "SDXL_WORKER_URL is set but SDXL_API_KEY is not: sdxl is disabled "
                "until SDXL_API_KEY holds the worker's bearer token."
            )
        registry = self.model_registry()
        for model in registry:
            if model.fallback is not None and (
                model.fallback == model.name or registry.get(model.fallback) is None
            ):
                warnings.append(
                    f"{model.name}'s fallback '{model.fallback}' is not another configured "
                    "model, so it is not used."
                )
        return warnings


def _builtin(
    name: str,
    url: HttpUrl,
    api_key: SecretStr | None,
    concurrency: int,
    fallback: str | None,
    daily_budget: int | None,
) -> ModelSpec:
    known = BUILTIN_MODELS[name]
    return ModelSpec(
        name=name,
        contract=known.contract,
        url=str(url),
        api_key=api_key,
        options=known.options,
        max_steps=known.max_steps,
        concurrency=concurrency,
        typical_duration_s=known.typical_duration_s,
        label=known.label,
        fallback=fallback.lower() if fallback else None,
        daily_budget=daily_budget,
    )


def _redis_url_problem(url: str) -> str | None:
    """What is wrong with a ``REDIS_URL``, in words that quote none of it; ``None`` if nothing."""
    if not url.startswith(("redis://", "rediss://", "unix://")):
        return "must start with redis://, rediss:// or unix://"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        # urllib names the bad port or host in its message: say it without quoting.
        return (
            "is not a valid Redis URL (check the host, and that the port is a number "
            f"from 1 to 65535); the form is {_REDIS_URL_FORM}"
        )
    if parts.scheme == "unix":
        return None if parts.path else "names no socket; write unix:///path/to/redis.sock"
    if port == 0:
        return f"the port must be a number from 1 to 65535; the form is {_REDIS_URL_FORM}"
    database = parts.path.removeprefix("/")
    if database and not (database.isascii() and database.isdecimal()):
        return (
            f"the database after the port must be a number (e.g. /0); the form is {_REDIS_URL_FORM}"
        )
    return None


def _env_file_problem(path: Path) -> str | None:
    """Why ``path`` cannot be read as a settings file; ``None`` if it can (or does not exist).

    A ``.env`` that is not UTF-8 text (a binary file, a UTF-16 export) would
    otherwise end in a decoding traceback deep inside the settings library.
    """
    try:
        if not path.is_file():
            return None  # no .env is fine: the environment alone is used
        with path.open("rb") as handle:
            data = handle.read(MAX_ENV_FILE_BYTES + 1)
    except OSError as exc:
        return (
            f"{path} cannot be read ({exc.strerror or type(exc).__name__}); let the user "
            "that runs SakaiBot read it, or give another file with --env-file"
        )
    hint = "it must be a text file of NAME=value lines in UTF-8 (see .env.example)"
    if len(data) > MAX_ENV_FILE_BYTES:
        limit_kib = MAX_ENV_FILE_BYTES // 1024
        return f"{path} is larger than {limit_kib} KiB, so it is not a settings file; {hint}"
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return f"{path} is not UTF-8 text (byte {exc.start} cannot be read); {hint}"
    if "\x00" in text:
        return f"{path} holds NUL bytes, so it is not a text file; {hint}"
    return None


def _describe(error: dict[str, Any]) -> str:
    parts = [str(part) for part in error.get("loc", ())]
    variable = parts[0].upper() if parts else "settings"
    message = str(error.get("msg", "invalid value")).removeprefix("Value error, ")
    if error.get("type") == "extra_forbidden":
        message = f"unknown key; the keys are {', '.join(ExtraModel.model_fields)}"
    if len(parts) > 1:  # inside IMAGE_MODELS: say which model and which key
        return f"{variable} ({'.'.join(parts[1:])}): {message}"
    return f"{variable}: {message}"


def load_settings(*, env_file: Path | None = Path(".env"), **overrides: Any) -> Settings:
    """Build the settings once; any invalid variable becomes one :class:`ConfigError`.

    ``overrides`` take precedence over the environment (used by the CLI's
    ``--local`` and by tests).
    """
    if env_file is not None:
        problem = _env_file_problem(env_file)
        if problem is not None:
            raise ConfigError([problem])
    try:
        return Settings(_env_file=env_file, **overrides)  # type: ignore[call-arg]
    except ValidationError as exc:
        problems = [_describe(dict(err)) for err in exc.errors()]
        raise ConfigError(problems) from exc

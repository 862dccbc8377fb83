"""Fuzzing the settings loader: any value loads, or is one clear ConfigError.

For each variable, arbitrary text and structured near-misses of what the
variable takes are put in the environment, and :func:`load_settings` must
either succeed or raise exactly :class:`~sakaibot.errors.ConfigError` whose
message starts as every configuration message does, names the variable, and
never quotes a secret set alongside.
"""

from __future__ import annotations

import json
import os
import string
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from sakaibot.errors import ConfigError
from sakaibot.settings import Settings, load_settings

MESSAGE_START = "SakaiBot is not configured correctly:"

INT_VARIABLES = (
    "TELEGRAM_API_ID",
    "TELEGRAM_OWNER_ID",
    "FLUX_CONCURRENCY",
    "SDXL_CONCURRENCY",
    "BREAKER_FAILURE_THRESHOLD",
    "WORKER_MAX_ATTEMPTS",
    "IMAGE_MAX_BYTES",
    "IMAGE_PROMPT_MAX_CHARS",
    "IMAGE_QUEUE_MAX",
    "IMAGE_USER_MAX_PENDING",
    "IMAGE_MAX_PER_REQUEST",
    "IMAGE_REJECTION_REPLIES",
    "HISTORY_RETENTION_DAYS",
    "CACHE_MAX_BYTES",
    "REDIS_INFLIGHT_PER_MODEL",
    "REDIS_CACHE_MAX_BYTES",
    "FLUX_DAILY_BUDGET",
    "SDXL_DAILY_BUDGET",
    "METRICS_PORT",
    "ENHANCE_AHEAD",
)
FLOAT_VARIABLES = (
    "SHUTDOWN_GRACE_S",
    "ENHANCER_TIMEOUT_S",
    "BREAKER_COOLDOWN_S",
    "WORKER_CONNECT_TIMEOUT_S",
    "WORKER_READ_TIMEOUT_S",
    "WORKER_RETRY_BUDGET_S",
    "STATUS_EDIT_INTERVAL_S",
    "STATUS_EDIT_INTERVAL_GROUP_S",
    "DELIVERY_MAX_WAIT_S",
    "UNDELIVERED_RETENTION_S",
    "CACHE_TTL_S",
    "REDIS_LEASE_S",
    "IMAGE_REJECTION_WINDOW_S",
)
SECRET_VARIABLES = (
    "FLUX_API_KEY",
    "SDXL_API_KEY",
    "OPENROUTER_API_KEY",
    "GEMINI_API_KEY",
    "TELEGRAM_API_HASH",
    "TELEGRAM_BOT_TOKEN",
    "TELEGRAM_SESSION",
)
#: Secrets with a shape of their own (a URL): any text is not valid, and a bad
#: one is one clear error that never quotes the value (tests/unit/test_settings.py).
SHAPED_SECRET_VARIABLES = ("REDIS_URL",)

FUZZ = settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# -- strategies ----------------------------------------------------------------

#: What an environment variable can hold: no NUL byte, no lone surrogate.
ENV_CHARACTERS = st.characters(codec="utf-8", exclude_characters="\x00")
any_text = st.text(ENV_CHARACTERS, max_size=60)
#: Digits of other scripts, which int() takes and pydantic does not.
odd_digits = st.sampled_from(["٣", "३", "３", "𝟓", "½", "²"])
spaces = st.sampled_from(["", " ", "  ", "\t", "\n", " \u00a0"])


def padded(values: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.builds(lambda left, value, right: left + value + right, spaces, values, spaces)


int_near_misses = padded(
    st.one_of(
        st.integers(-(10**30), 10**30).map(str),
        st.integers(-5, 50).map(str),
        st.integers(0, 10**7).map(str),
        st.integers(0, 10**6).map(lambda n: f"{n:_}"),
        st.integers(0, 10**6).map(hex),
        st.integers(0, 10**6).map(lambda n: f"+{n}"),
        st.floats(allow_nan=True, allow_infinity=True).map(repr),
        st.sampled_from(["1.0", "1e3", "1.5", "-0", "0", "true", "none", "null", "1,000", "1 2"]),
        odd_digits,
    )
)
float_near_misses = padded(
    st.one_of(
        st.floats(allow_nan=True, allow_infinity=True).map(repr),
        st.floats(allow_nan=True, allow_infinity=True).map(str),
        st.integers(-(10**30), 10**30).map(str),
        st.sampled_from(
            ["nan", "NaN", "inf", "-inf", "Infinity", "1e999", "-1e-400", "0x1p3", "1_0.5", "1,5"]
        ),
        st.builds(lambda a, b: f"{a}.{b}", st.integers(-100, 100), st.integers(0, 999)),
        odd_digits,
    )
)

units = st.sampled_from(["s", "m", "h", "d", "S", "M", "H", "D", "", "w", "x", "min", "ms"])
#: Kept below 10**300: a window multiple above ~1e303 days is covered by the
#: dedicated (xfail) test below, so the fuzzing here stays reproducible.
limit_numbers = st.one_of(
    st.integers(-5, 100).map(str),
    st.integers(0, 10**300).map(str),
    st.just(""),
    odd_digits,
)
one_limit = st.builds(
    lambda count, sep, multiple, unit, pad: f"{pad}{count}{sep}{multiple}{unit}{pad}",
    limit_numbers,
    st.sampled_from(["/", " / ", "//", "-", ""]),
    limit_numbers,
    units,
    spaces,
)
limit_near_misses = st.one_of(
    st.lists(one_limit, min_size=1, max_size=4).map(",".join),
    st.lists(one_limit, min_size=1, max_size=3).map(";".join),
    st.sampled_from(
        ["off", "OFF", " none ", "0", "", " ", "on", "unlimited", "10/1m,", ",", "-1/1m"]
    ),
)

provider_near_misses = padded(
    st.one_of(
        st.sampled_from(["openrouter", "gemini", "none"]),
        st.sampled_from(["OpenRouter", "GEMINI", "None", "open router", "openai", "", "null"]),
    )
)

telegram_ids = st.integers(-(10**20), 10**20).map(str)
id_separators = st.sampled_from([",", ";", " , ", ",,", " ", ";;", ", "])
ids_near_misses = st.one_of(
    st.builds(
        lambda ids, sep: sep.join(ids),
        st.lists(st.one_of(telegram_ids, any_text, odd_digits), max_size=5),
        id_separators,
    ),
    st.lists(telegram_ids, max_size=5).map(",".join),
)

url_schemes = st.sampled_from(["http", "https", "HTTP", "ftp", "file", "", "http:", "ws"])
url_hosts = st.one_of(
    st.sampled_from(
        ["127.0.0.1", "localhost", "[::1]", "[::1", "exa mple.com", "example.com", "", "a..b", "-"]
    ),
    st.text(ENV_CHARACTERS, max_size=12),
)
url_ports = st.one_of(st.just(""), st.integers(-1, 100_000).map(lambda n: f":{n}"), st.just(":"))
url_paths = st.one_of(st.just(""), st.just("/flux"), any_text.map(lambda text: "/" + text))
url_near_misses = st.one_of(
    st.builds(
        lambda scheme, host, port, path: f"{scheme}://{host}{port}{path}",
        url_schemes,
        url_hosts,
        url_ports,
        url_paths,
    ),
    st.builds(lambda host, path: f"{host}{path}", url_hosts, url_paths),
)

#: JSON values, nested a little (deep nesting has its own, xfail, test below).
json_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(10**6), 10**6),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(ENV_CHARACTERS, max_size=20),
    ),
    lambda children: st.one_of(
        st.lists(children, max_size=3),
        st.dictionaries(st.text(ENV_CHARACTERS, max_size=10), children, max_size=3),
    ),
    max_leaves=10,
)


def secret_values() -> st.SearchStrategy[str]:
    """A secret nothing else could contain by chance."""
    return st.text(string.ascii_letters + string.digits, min_size=16, max_size=32).map(
        lambda tail: f"sk-SECRET-{tail}"
    )


model_entries = st.fixed_dictionaries(
    {},
    optional={
        "contract": st.one_of(st.sampled_from(["get", "post", "GET", "put", ""]), json_values),
        "url": st.one_of(url_near_misses, json_values),
        "api_key": st.one_of(secret_values(), json_values),
        "options": st.one_of(
            st.lists(st.sampled_from(["ar", "seed", "neg", "steps", "style", "zoom", ""])),
            json_values,
        ),
        "max_steps": st.one_of(st.integers(-5, 200), json_values),
        "concurrency": st.one_of(st.integers(-5, 50), json_values),
        "typical_duration_s": st.one_of(
            st.floats(allow_nan=False, allow_infinity=False), json_values
        ),
        "label": json_values,
        "fallback": json_values,
        "apikey": secret_values(),  # a misspelt key
    },
)


def cut(text: str, fraction: float) -> str:
    return text[: int(len(text) * fraction)]


image_models_json = st.one_of(
    st.dictionaries(
        # Valid names (so the entries are checked too), and anything else.
        st.one_of(st.from_regex(r"[a-z0-9_-]{1,32}", fullmatch=True), st.text(ENV_CHARACTERS)),
        model_entries,
        max_size=3,
    ).map(json.dumps),
    json_values.map(json.dumps),
)
models_near_misses = st.one_of(
    image_models_json,
    # Truncated JSON: a paste cut short.
    st.builds(cut, image_models_json, st.floats(0, 1)),
    st.sampled_from(["{", "}", "[]", "{}", "null", "NaN", "1e999", "{'a': 1}", "{a: 1}", " "]),
)

NEAR_MISSES: dict[str, st.SearchStrategy[str]] = {
    **dict.fromkeys(INT_VARIABLES, int_near_misses),
    **dict.fromkeys(FLOAT_VARIABLES, float_near_misses),
    "IMAGE_USER_LIMITS": limit_near_misses,
    "IMAGE_GLOBAL_LIMITS": limit_near_misses,
    "IMAGE_MODELS": models_near_misses,
    "LLM_PROVIDER": provider_near_misses,
    "ALLOWED_USER_IDS": ids_near_misses,
    "ALLOWED_CHAT_IDS": ids_near_misses,
    "FLUX_WORKER_URL": url_near_misses,
    "SDXL_WORKER_URL": url_near_misses,
}

# -- the property ----------------------------------------------------------------


@contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    """Set ``values`` in os.environ for one example, then put everything back."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, old in saved.items():
            if old is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = old


def load_or_config_error(variable: str, value: str, secrets: dict[str, str]) -> Settings | None:
    """Load with ``variable=value`` (and the secrets); check any error is the one kind."""
    with environment({**secrets, variable: value}):
        try:
            return load_settings(env_file=None)
        except ConfigError as exc:
            error = exc
    message = error.user_message
    assert message.startswith(MESSAGE_START), message
    assert variable in message, message
    assert error.problems
    for problem in error.problems:
        # Only this variable was wrong, so every problem is about it.
        assert problem.startswith((f"{variable}:", f"{variable} (")), problem
    for name, secret in secrets.items():
        assert secret not in message, f"the value of {name} is quoted: {message}"
        assert secret not in str(error), f"the value of {name} is in str(error)"
    return None


secret_environments = st.fixed_dictionaries({name: secret_values() for name in SECRET_VARIABLES})

FUZZED_VARIABLES = sorted(NEAR_MISSES)


@pytest.mark.parametrize("variable", FUZZED_VARIABLES)
@FUZZ
@given(data=st.data())
def test_any_value_loads_or_is_one_clear_config_error(variable: str, data: st.DataObject) -> None:
    value = data.draw(st.one_of(any_text, NEAR_MISSES[variable]), label=variable)
    secrets = data.draw(secret_environments, label="secrets")
    assume(not any(secret in value for secret in secrets.values()))
    loaded = load_or_config_error(variable, value, secrets)
    event("loaded" if loaded is not None else "ConfigError")


@pytest.mark.parametrize("variable", SECRET_VARIABLES)
@FUZZ
@given(value=any_text)
def test_a_secret_variable_takes_any_text(variable: str, value: str) -> None:
    with environment({variable: value}):
        loaded = load_settings(env_file=None)
    secret = getattr(loaded, variable.lower())
    if value.strip():
        assert secret is not None
        assert secret.get_secret_value() == value
    else:
        assert secret is None  # a copied `KEY=` line means "not set"


@FUZZ
@given(
    entry=model_entries,
    secrets=secret_environments,
)
def test_a_key_inside_image_models_is_never_quoted(
    entry: dict[str, Any], secrets: dict[str, str]
) -> None:
    """Whatever is wrong with an IMAGE_MODELS entry, its api_key is not in the message."""
    value = json.dumps({"mine": entry})
    keys = [v for k, v in entry.items() if k in {"api_key", "apikey"} and isinstance(v, str)]
    message = config_error_message({**secrets, "IMAGE_MODELS": value})
    for key in keys:
        if len(key) >= 16:  # a generated secret, not a short JSON leaf
            assert key not in message


def config_error_message(values: dict[str, str]) -> str:
    """The ConfigError's message when loading with ``values``; "" when they load."""
    with environment(values):
        try:
            load_settings(env_file=None)
        except ConfigError as exc:
            return exc.user_message
    return ""


def test_every_numeric_variable_is_fuzzed() -> None:
    numeric = {
        name.upper()
        for name, info in Settings.model_fields.items()
        if info.annotation in (int, float, int | None, float | None)
    }
    assert numeric == set(INT_VARIABLES) | set(FLOAT_VARIABLES)
    secret = {
        name.upper()
        for name, info in Settings.model_fields.items()
        if "SecretStr" in str(info.annotation)
    }
    assert secret == set(SECRET_VARIABLES) | set(SHAPED_SECRET_VARIABLES)


# -- found by fuzzing: inputs that used to escape as another exception -------------


def test_a_huge_window_is_a_config_error() -> None:
    """It raised OverflowError from float() before windows were bounded."""
    value = "1/1" + "0" * 304 + "d"
    assert load_or_config_error("IMAGE_USER_LIMITS", value, {}) is None


def test_infinite_timeouts_are_a_config_error() -> None:
    assert load_or_config_error("WORKER_READ_TIMEOUT_S", "inf", {}) is None
    assert load_or_config_error("STATUS_EDIT_INTERVAL_S", "1e999", {}) is None


def test_deeply_nested_image_models_is_a_config_error() -> None:
    """It raised RecursionError from json.loads before that was caught."""
    assert load_or_config_error("IMAGE_MODELS", "[" * 100_000, {}) is None


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("IMAGE_USER_LIMITS", "1/1" + "0" * 290 + "d"),
        ("IMAGE_USER_LIMITS", "9" * 5000 + "/1m"),
        ("IMAGE_MODELS", "[" * 50 + "]" * 50),
        ("ALLOWED_USER_IDS", "9" * 5000),
        ("FLUX_CONCURRENCY", "9" * 5000),
        ("WORKER_READ_TIMEOUT_S", "nan"),
    ],
)
def test_edge_values_just_below_the_bugs(variable: str, value: str) -> None:
    load_or_config_error(variable, value, {})

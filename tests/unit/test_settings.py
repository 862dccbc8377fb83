"""Settings: original variable names, one clear error per bad variable, secrets kept secret."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sakaibot.errors import ConfigError
from sakaibot.limits import RateWindow
from sakaibot.models import Contract
from sakaibot.settings import load_settings


def test_defaults_match_the_original_design() -> None:
    settings = load_settings(env_file=None)
    assert settings.image_user_limits == [RateWindow(10, 60.0)]
    assert settings.image_prompt_max_chars == 1000
    assert settings.worker_connect_timeout_s == 30.0
    assert settings.worker_read_timeout_s == 120.0
    assert (settings.image_queue_max, settings.image_user_max_pending) == (50, 4)
    assert settings.status_edit_interval_s == 3.0
    assert not settings.model_registry()


def test_original_environment_names_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLUX_WORKER_URL", "https://flux.example.workers.dev")
    monkeypatch.setenv("SDXL_WORKER_URL", "https://sdxl.example.workers.dev")
    monkeypatch.setenv("SDXL_API_KEY", "sdxl-secret-value")
    monkeypatch.setenv("OPENROUTER_API_KEY", "or-secret-value")
    monkeypatch.setenv("FLUX_CONCURRENCY", "2")
    settings = load_settings(env_file=None)
    registry = settings.model_registry()
    assert registry.names() == ["flux", "sdxl"]
    flux = registry.get("FLUX")
    assert flux is not None
    assert flux.concurrency == 2
    assert "sdxl-secret-value" not in repr(settings)
    assert "or-secret-value" not in str(settings)


def test_sdxl_needs_its_key_and_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SDXL_WORKER_URL", "https://sdxl.example.workers.dev")
    settings = load_settings(env_file=None)
    assert settings.model_registry().names() == []
    assert "SDXL_API_KEY" in settings.configuration_warnings()[0]


def test_empty_values_from_a_copied_example_mean_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLUX_WORKER_URL", "")
    monkeypatch.setenv("OPENROUTER_API_KEY", "  ")
    settings = load_settings(env_file=None)
    assert settings.flux_worker_url is None
    assert settings.openrouter_api_key is None


def test_env_file_is_read(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("FLUX_WORKER_URL=http://127.0.0.1:8787/flux\nIMAGE_USER_LIMITS=off\n")
    settings = load_settings(env_file=env_file)
    assert settings.model_registry().names() == ["flux"]
    assert settings.image_user_limits == []


def test_a_model_is_added_from_configuration_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    """Defect 10: adding a model used to mean editing four files."""
    monkeypatch.setenv(
        "IMAGE_MODELS",
        '{"Dream": {"contract": "post", "url": "https://dream.example.workers.dev",'
        ' "api_key": "dream-key", "options": ["seed", "neg"], "max_steps": 30,'
        ' "label": "DreamShaper"}}',
    )
    registry = load_settings(env_file=None).model_registry()
    dream = registry.get("dream")
    assert dream is not None
    assert dream.contract is Contract.POST
    assert dream.supported_flags() == ["--seed", "--neg", "--style", "--raw", "--file", "--fresh"]
    assert dream.display_name == "DreamShaper"


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("IMAGE_USER_LIMITS", "lots", "IMAGE_USER_LIMITS: 'lots' is not a limit"),
        ("FLUX_WORKER_URL", "not a url", "FLUX_WORKER_URL:"),
        ("FLUX_CONCURRENCY", "0", "FLUX_CONCURRENCY:"),
        ("IMAGE_MODELS", "{not json", "IMAGE_MODELS:"),
        (
            "IMAGE_MODELS",
            '{"x": {"contract": "put", "url": "http://h"}}',
            "IMAGE_MODELS (x.contract):",
        ),
        (
            "IMAGE_MODELS",
            '{"x": {"contract": "get", "url": "http://h", "options": ["zoom"]}}',
            "unknown option(s) zoom",
        ),
        ("LLM_PROVIDER", "chatgpt", "LLM_PROVIDER:"),
        ("REDIS_URL", "http://:secret@127.0.0.1:6379", "REDIS_URL: must start with redis://"),
        ("REDIS_PREFIX", "my bot", "REDIS_PREFIX: 'my bot' may only hold"),
    ],
)
def test_bad_values_name_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, expected: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as info:
        load_settings(env_file=None)
    assert expected in info.value.user_message
    assert info.value.user_message.startswith("SakaiBot is not configured correctly:")


def test_a_bad_secret_is_never_echoed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TELEGRAM_API_ID", "canary-1234-secret")
    with pytest.raises(ConfigError) as info:
        load_settings(env_file=None)
    assert "TELEGRAM_API_ID" in info.value.user_message
    assert "canary-1234-secret" not in info.value.user_message


def test_a_misspelt_model_key_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "IMAGE_MODELS", '{"dream": {"contract": "post", "url": "http://h/", "apikey": "k"}}'
    )
    with pytest.raises(ConfigError) as info:
        load_settings(env_file=None)
    assert "IMAGE_MODELS (dream.apikey): unknown key; the keys are contract, url, api_key" in (
        info.value.user_message
    )


def test_an_empty_limit_line_means_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMAGE_USER_LIMITS", "")
    assert load_settings(env_file=None).image_user_limits == [RateWindow(10, 60.0)]


def test_an_empty_development_llm_url_means_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLM_DEV_URL", "")
    assert load_settings(env_file=None).llm_dev_url is None


def test_a_bad_redis_url_is_not_echoed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", "http://:hunter2-canary@127.0.0.1:6379")
    with pytest.raises(ConfigError) as info:
        load_settings(env_file=None)
    assert "REDIS_URL" in info.value.user_message
    assert "hunter2-canary" not in info.value.user_message


def test_flux_sends_its_key_when_one_is_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLUX_WORKER_URL", "https://images.example.workers.dev/flux")
    monkeypatch.setenv("FLUX_API_KEY", "flux-secret-value")
    settings = load_settings(env_file=None)
    flux = settings.model_registry().get("flux")
    assert flux is not None
    assert flux.api_key is not None
    assert flux.api_key.get_secret_value() == "flux-secret-value"
    assert "flux-secret-value" not in repr(settings)


def test_flux_without_a_key_stays_offered(monkeypatch: pytest.MonkeyPatch) -> None:
    """Open Flux workers need no key; an empty FLUX_API_KEY= line means none."""
    monkeypatch.setenv("FLUX_WORKER_URL", "https://flux.example.workers.dev")
    monkeypatch.setenv("FLUX_API_KEY", " ")
    flux = load_settings(env_file=None).model_registry().get("flux")
    assert flux is not None
    assert flux.api_key is None


def test_empty_values_in_a_real_env_file_mean_unset(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text(
        "LLM_PROVIDER=\nOPENROUTER_MODEL=\nSAKAIBOT_DATA_DIR=  \nIMAGE_QUEUE_MAX=\n"
        "FLUX_WORKER_URL=http://127.0.0.1:8787/flux\n",
        "utf-8",
    )
    settings = load_settings(env_file=env_file)
    assert settings.llm_provider == "openrouter"
    assert settings.openrouter_model == "openai/gpt-4o-mini"
    assert settings.sakaibot_data_dir == Path("data")
    assert settings.image_queue_max == 50
    assert settings.model_registry().names() == ["flux"]


@pytest.mark.parametrize(
    "name", ["../../x", "a/b", "Flux 2", "x" * 33, "", ".hidden", "caf\u00e9", "a\\b"]
)
def test_an_image_models_name_that_could_leave_the_folder_is_refused(name: str) -> None:
    value = json.dumps({name: {"contract": "get", "url": "http://127.0.0.1:1/"}})
    with pytest.raises(ConfigError) as info:
        load_settings(env_file=None, image_models=value)
    (problem,) = info.value.problems
    assert problem.startswith("IMAGE_MODELS:"), problem
    assert "1 to 32 lowercase letters, digits, - or _" in problem


@pytest.mark.parametrize("name", ["turbo-xl", "sd_15", "x" * 32, "Turbo"])
def test_a_plain_image_models_name_is_accepted(name: str) -> None:
    value = json.dumps({name: {"contract": "get", "url": "http://127.0.0.1:1/"}})
    registry = load_settings(env_file=None, image_models=value).model_registry()
    assert registry.names() == [name.lower()]


def test_two_image_models_names_that_differ_only_in_case_are_refused() -> None:
    value = json.dumps(
        {name: {"contract": "get", "url": "http://127.0.0.1:1/"} for name in ("turbo", "TURBO")}
    )
    with pytest.raises(ConfigError, match="'turbo' is given twice"):
        load_settings(env_file=None, image_models=value)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://:hunter2@127.0.0.1:99999/0", "port is a number from 1 to 65535"),
        ("redis://:hunter2@127.0.0.1:abc/0", "port is a number from 1 to 65535"),
        ("redis://:hunter2@127.0.0.1:0/0", "the port must be a number from 1 to 65535"),
        ("redis://:hunter2@[::1/0", "not a valid Redis URL"),
        ("redis://:hunter2@127.0.0.1:6379/zero", "the database after the port must be a number"),
        ("unix://", "names no socket"),
    ],
)
def test_a_bad_redis_url_is_one_line_that_quotes_none_of_it(url: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(env_file=None, redis_url=url)
    (problem,) = info.value.problems
    assert problem.startswith("REDIS_URL:"), problem
    assert expected in problem
    assert "hunter2" not in info.value.user_message
    assert "hunter2" not in str(info.value)


@pytest.mark.parametrize(
    "url", ["redis://localhost:6379/0", "rediss://:pw@cache.example:6380", "unix:///run/r.sock"]
)
def test_a_good_redis_url_is_accepted(url: str) -> None:
    settings = load_settings(env_file=None, redis_url=url)
    assert settings.redis_url is not None


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (bytes(range(256)), "is not UTF-8 text (byte 128 cannot be read)"),
        ("FLUX_WORKER_URL=x\n".encode("utf-16"), "is not UTF-8 text"),
        (b"FLUX_WORKER_URL=http://h\x00\n", "holds NUL bytes"),
    ],
)
def test_an_env_file_that_is_not_text_is_one_clear_config_error(
    tmp_path: Path, content: bytes, expected: str
) -> None:
    env_file = tmp_path / ".env"
    env_file.write_bytes(content)
    with pytest.raises(ConfigError) as info:
        load_settings(env_file=env_file)
    (problem,) = info.value.problems
    assert problem.startswith(str(env_file)), problem
    assert expected in problem
    assert "NAME=value lines in UTF-8" in problem

"""Every setting is documented, and nothing is documented that is not a setting.

``configuration.md`` is the one page that describes every setting, and
``.env.example`` the file operators copy; both are read against the settings
model, so a new setting (or a renamed one) cannot be left out of either.
"""

from __future__ import annotations

import re
from pathlib import Path

from sakaibot.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
CONFIGURATION = ROOT / "docs" / "image-generation" / "configuration.md"
ENV_EXAMPLE = ROOT / ".env.example"

#: Environment variables configuration.md names on purpose although they are not
#: settings: it says SakaiBot ignores them.
NOT_SETTINGS_BY_DESIGN = {"OPENAI_API_KEY", "OPENAI_BASE_URL", "OPENAI_ORG_ID", "OPENAI_PROJECT_ID"}


def setting_names() -> set[str]:
    """The environment names of the settings (pydantic-settings: the field name, any case)."""
    names = set()
    for name, field in Settings.model_fields.items():
        alias = field.validation_alias or field.alias
        names.add((alias if isinstance(alias, str) else name).upper())
    return names


def test_the_settings_model_is_read_at_all() -> None:
    names = setting_names()
    assert {"FLUX_WORKER_URL", "SAKAIBOT_DATA_DIR", "REDIS_URL"} <= names
    assert len(names) > 40


def test_configuration_md_has_one_table_row_for_every_setting_and_no_other() -> None:
    text = CONFIGURATION.read_text("utf-8")
    rows = set(re.findall(r"^\| `([A-Z][A-Z0-9_]+)` \|", text, re.MULTILINE))
    assert sorted(setting_names() - rows) == [], "settings configuration.md does not describe"
    assert sorted(rows - setting_names()) == [], "rows of configuration.md that are no setting"


def test_configuration_md_names_no_variable_that_is_not_a_setting() -> None:
    text = CONFIGURATION.read_text("utf-8")
    named = set(re.findall(r"`([A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+)(?:=[^`]*)?`", text))
    assert sorted(named - setting_names() - NOT_SETTINGS_BY_DESIGN) == []


def test_env_example_lists_every_setting_once_and_no_other() -> None:
    lines = ENV_EXAMPLE.read_text("utf-8").splitlines()
    assigned = [
        match.group(1)
        for line in lines
        if (match := re.fullmatch(r"(?:# )?([A-Z][A-Z0-9_]+)=.*", line)) is not None
    ]
    assert sorted(setting_names() - set(assigned)) == [], ".env.example leaves these out"
    assert sorted(set(assigned) - setting_names()) == [], ".env.example names no such setting"
    assert sorted(name for name in set(assigned) if assigned.count(name) > 1) == []


def test_env_example_comments_name_only_settings() -> None:
    text = ENV_EXAMPLE.read_text("utf-8")
    # A name followed by @ is a placeholder of a format (DC_ID@HOST:PORT).
    named = set(re.findall(r"\b([A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+)\b(?!@)", text))
    # API_TOKEN is the shipped Cloudflare Worker's secret, named so the operator
    # can set it with `wrangler secret put`; it is not a setting of the bot.
    assert sorted(named - setting_names() - {"API_TOKEN"}) == []


def test_the_readme_points_to_configuration_md_instead_of_repeating_the_table() -> None:
    readme = (ROOT / "README.md").read_text("utf-8")
    assert "docs/image-generation/configuration.md" in readme
    assert "docs/image-generation/quickstart.md" in readme
    rows = re.findall(r"^\| `[A-Z][A-Z0-9_]+` \|", readme, re.MULTILINE)
    assert rows == [], "README.md repeats settings rows; link to configuration.md instead"

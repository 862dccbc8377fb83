"""``sakaibot verify`` against a development worker and an LLM stub on loopback."""

from __future__ import annotations

import io

from sakaibot.devworker import DevWorker, DevWorkerConfig
from sakaibot.settings import load_settings
from sakaibot.verify import run_verify
from tests.support.llm_stub import Completion, LlmStub, Status

KEY = "verify-test-key"
ENHANCED = "a red fox curled in fresh snow under a pale winter sky, soft light"


async def test_everything_reachable_passes() -> None:
    with (
        DevWorker(DevWorkerConfig(api_key=KEY)) as worker_url,
        LlmStub(Completion(ENHANCED)) as stub,
    ):
        settings = load_settings(
            env_file=None,
            flux_worker_url=f"{worker_url}/flux",
            sdxl_worker_url=f"{worker_url}/sdxl",
            sdxl_api_key=KEY,
            openrouter_api_key="or-key",
            openrouter_base_url=stub.base_url,
        )
        out = io.StringIO()
        code = await run_verify(settings, out)
    lines = out.getvalue().splitlines()
    assert code == 0, lines
    assert lines[0] == "✓ settings: models flux, sdxl"
    assert lines[1].startswith("✓ LLM OpenRouter (openai/gpt-4o-mini): answered in")
    assert lines[2].startswith("✓ worker flux: 512×512 JPG")
    assert lines[3].startswith("✓ worker sdxl: 512×512 PNG")
    assert lines[-1] == "All checks passed."


async def test_each_failure_gets_a_diagnosis_and_a_non_zero_exit() -> None:
    with DevWorker(DevWorkerConfig(api_key=KEY)) as worker_url, LlmStub(Status(401)) as stub:
        settings = load_settings(
            env_file=None,
            flux_worker_url=f"{worker_url}/nothing-here",
            sdxl_worker_url=f"{worker_url}/sdxl",
            sdxl_api_key="wrong-key",
            openrouter_api_key="or-key",
            openrouter_base_url=stub.base_url,
        )
        out = io.StringIO()
        code = await run_verify(settings, out)
    text = out.getvalue()
    assert code == 1
    assert "✗ LLM OpenRouter (openai/gpt-4o-mini): no usable answer" in text
    assert "✗ worker flux: worker_bad_request" in text
    assert "✗ worker sdxl: worker_auth" in text
    assert "SDXL_API_KEY" in text
    assert "wrong-key" not in text
    assert text.endswith("3 check(s) failed.\n")

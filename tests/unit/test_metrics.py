"""The operator's dashboard over real loopback HTTP: /healthz, /metrics, the stats chart."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import AsyncIterator

import httpx
import pytest

from sakaibot.charts import CHART_HEIGHT_PX, CHART_WIDTH_PX
from sakaibot.subcommands import png_size
from tests.unit.test_quota import Harness, make_harness


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture
async def served() -> AsyncIterator[tuple[Harness, httpx.AsyncClient, list[bool]]]:
    connected = [True]
    # The Telegram adapter hands in its client's state; here a switch the test flips.
    h = make_harness(connected=lambda: connected[0], metrics_port=free_port(), flux_daily_budget=1)
    await h.app.start()
    assert h.app.metrics_server is not None
    url = f"http://127.0.0.1:{h.app.metrics_server.port}"
    async with httpx.AsyncClient(base_url=url, timeout=5) as client:
        yield h, client, connected
    await h.app.aclose()


async def test_healthz_is_200_while_the_bot_can_serve_and_503_when_it_cannot(
    served: tuple[Harness, httpx.AsyncClient, list[bool]],
) -> None:
    h, client, connected = served
    answer = await client.get("/healthz")
    assert answer.status_code == 200
    body = answer.json()
    assert body["telegram_connected"]
    assert body["store_writable"]
    assert body["models"]["flux"] == {
        "serving": True,
        "breaker": "closed",
        "budget_used": 0,
        "budget_limit": 1,
        "paused_until_s": None,
    }
    connected[0] = False
    answer = await client.get("/healthz")
    assert answer.status_code == 503
    assert not answer.json()["telegram_connected"]
    connected[0] = True
    # Every model paused until 00:00 UTC: nothing can be served.
    await h.say("/image=flux=one")
    await h.finish()
    await h.app.budgets.quota_exhausted("sdxl")
    answer = await client.get("/healthz")
    assert answer.status_code == 503
    assert answer.json()["models"]["flux"]["paused_until_s"] is not None
    # A store that takes no writes.
    await h.app.store.close()
    answer = await client.get("/healthz")
    assert answer.status_code == 503
    assert not answer.json()["store_writable"]


async def test_metrics_count_jobs_queues_budgets_and_cache_hits(
    served: tuple[Harness, httpx.AsyncClient, list[bool]],
) -> None:
    h, client, _ = served
    await h.say("/image=flux=a fox")
    await h.finish()
    await h.say("/image=flux=a fox", user="bob")  # the same request: from the cache
    await h.finish()
    answer = await client.get("/metrics")
    assert answer.status_code == 200
    text = answer.text
    assert 'sakaibot_jobs_total{model="flux",outcome="delivered"} 2.0' in text
    # The cache hit never waited in a queue nor met a worker.
    assert 'sakaibot_job_wait_seconds_count{model="flux"} 1.0' in text
    assert 'sakaibot_job_generate_seconds_count{model="flux"} 1.0' in text
    assert 'sakaibot_cache_hits_total{model="flux"} 1.0' in text
    assert 'sakaibot_queue_depth{model="flux",state="waiting"} 0.0' in text
    assert 'sakaibot_budget_used{model="flux"} 1.0' in text
    assert 'sakaibot_model_paused_until_reset{model="flux"} 1.0' in text
    assert 'sakaibot_flood_waits_total{where="delivery"} 0.0' in text
    assert "sakaibot_enhancer_fallbacks_total 0.0" in text
    assert (await client.get("/nothing")).status_code == 404
    assert (await client.post("/metrics")).status_code == 405


async def test_the_owner_gets_the_days_chart_as_a_photo(
    served: tuple[Harness, httpx.AsyncClient, list[bool]],
) -> None:
    h, _, _ = served
    await h.say("/image=flux=a fox")
    await h.finish()
    refused = await h.say("/image stats", user="bob")
    assert "Only the bot's owner" in h.replies_to(refused)[0]
    asked = await h.say("/image stats", owner=True)
    [chart] = [e for e in h.chat.of_kind("image") if e.reply_to == asked]
    assert chart.image is not None
    png = chart.image.image.data
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    assert png_size(png) == (CHART_WIDTH_PX, CHART_HEIGHT_PX)
    assert not any(e.image for e in h.chat.events if e.reply_to == refused)


def test_help_loads_neither_prometheus_nor_matplotlib() -> None:
    code = (
        "import sys, contextlib, io\n"
        "from sakaibot.cli import main\n"
        "with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n"
        "    main(['--help'])\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'prometheus_client', 'matplotlib'}))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "[]"


async def test_a_flood_wait_before_an_album_is_counted_as_one_before_a_delivery(
    served: tuple[Harness, httpx.AsyncClient, list[bool]],
) -> None:
    from sakaibot.errors import FloodWait

    h, client, _ = served
    h.chat.image_failures.append(FloodWait(5))
    await h.say("/image=sdxl=a fox --n 2")  # flux has a budget of 1 here
    await h.finish()
    assert len(h.chat.albums) == 1
    text = (await client.get("/metrics")).text
    assert 'sakaibot_flood_waits_total{where="delivery"} 1.0' in text

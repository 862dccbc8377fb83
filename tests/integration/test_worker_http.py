"""The worker client against the development worker over real loopback HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from pydantic import SecretStr

from sakaibot.devworker import DevWorker, DevWorkerConfig
from sakaibot.errors import WorkerAuthError, WorkerBadRequest, WorkerGaveUp
from sakaibot.generation import GenerationParams
from sakaibot.models import Contract, ModelSpec
from sakaibot.workers.client import WorkerClient, build_http_client
from tests.support.fakes import FakeClock

API_KEY = "loopback-test-key"


@pytest.fixture
def worker() -> Iterator[DevWorker]:
    dev = DevWorker(DevWorkerConfig(api_key=API_KEY))
    dev.start()
    yield dev
    dev.stop()


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    client = build_http_client(connect_timeout_s=5, read_timeout_s=10)
    yield client
    await client.aclose()


def flux(base_url: str) -> ModelSpec:
    return ModelSpec(name="flux", contract=Contract.GET, url=f"{base_url}/flux")


def sdxl(base_url: str, key: str = API_KEY) -> ModelSpec:
    return ModelSpec(
        name="sdxl", contract=Contract.POST, url=f"{base_url}/sdxl", api_key=SecretStr(key)
    )


def client_for(http: httpx.AsyncClient, clock: FakeClock | None = None) -> WorkerClient:
    clock = clock or FakeClock()
    return WorkerClient(
        http,
        max_image_bytes=5_000_000,
        retry_budget_s=60,
        max_attempts=3,
        sleep=clock.sleep,
        clock=clock,
    )


async def test_flux_get_gives_a_jpeg(worker: DevWorker, http: httpx.AsyncClient) -> None:
    image = await client_for(http).fetch_image(
        flux(worker.url), GenerationParams(prompt="a red fox in the snow", seed=3)
    )
    assert image.mime_type == "image/jpeg"
    assert image.extension == ".jpg"
    assert image.data[:3] == b"\xff\xd8\xff"


async def test_sdxl_post_with_bearer_gives_a_png_of_the_asked_size(
    worker: DevWorker, http: httpx.AsyncClient
) -> None:
    image = await client_for(http).fetch_image(
        sdxl(worker.url), GenerationParams(prompt="a lighthouse", width=768, height=512)
    )
    assert (image.extension, image.width, image.height) == (".png", 768, 512)


async def test_wrong_key_is_an_auth_error_not_retried(
    worker: DevWorker, http: httpx.AsyncClient
) -> None:
    with pytest.raises(WorkerAuthError) as info:
        await client_for(http).fetch_image(sdxl(worker.url, "wrong"), GenerationParams("x"))
    assert "SDXL_API_KEY" in info.value.user_message
    assert worker.request_count == 1


async def test_transient_failures_are_retried_then_given_up(http: httpx.AsyncClient) -> None:
    with DevWorker(DevWorkerConfig(fail_rate=1.0, fail_status=503)) as base_url:
        result = await client_for(http).generate(flux(base_url), GenerationParams("x"))
    assert result.success is False
    assert isinstance(result.error, WorkerGaveUp)
    assert result.error.attempts == 3
    assert "tried 3 times" in result.error.user_message


async def test_permanent_failures_are_not_retried(http: httpx.AsyncClient) -> None:
    dev = DevWorker(DevWorkerConfig(fail_rate=1.0, fail_status=400))
    with dev as base_url:
        result = await client_for(http).generate(flux(base_url), GenerationParams("x"))
        assert dev.request_count == 1
    assert isinstance(result.error, WorkerBadRequest)

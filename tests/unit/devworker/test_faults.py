"""Each image fault of the development worker, over real HTTP and through the bot's own client."""

from __future__ import annotations

import base64
import time

import httpx
import pytest

from sakaibot.devworker import (
    FAST_SIZE_PX,
    FAULT_NAMES,
    LLM_FAULT_NAMES,
    TRICKLE_CHUNKS,
    parse_fault,
)
from sakaibot.errors import (
    ContentFiltered,
    GenerationError,
    ImageTooLarge,
    InvalidImage,
    QuotaExhausted,
    WorkerAuthError,
    WorkerBadRequest,
    WorkerGaveUp,
)
from sakaibot.generation import GenerationParams
from sakaibot.models import Contract, ModelSpec
from sakaibot.workers.client import WorkerClient, build_http_client
from tests.support.devworker import (
    FAULT_HEADER,
    HANG_TIMEOUT_S,
    JPEG_MAGIC,
    TLS,
    StartWorker,
    WorkerFactory,
    flux,
    image_size,
)

#: name -> (status, error, a piece of the details, Retry-After)
ERROR_FAULTS: dict[str, tuple[int, str, str, str | None]] = {
    "400": (400, "Bad request", "3003", None),
    "401": (401, "Unauthorized", "bearer", None),
    "405": (405, "Not allowed", "not allowed", None),
    "408": (408, "Request timeout", "3007", None),
    "413": (413, "Request too large", "3006", None),
    "429": (429, "Failed to generate image", "3040: Out of capacity", None),
    "429-quota": (429, "Failed to generate image", "3036", None),
    "500": (500, "Failed to generate image", "internal error", None),
    "500-nsfw": (500, "Failed to generate image", "NSFW", None),
    "500-capacity": (500, "Failed to generate image", "3040: Out of capacity", None),
    "502": (502, "Bad gateway", "fault 502", None),
    "503": (503, "Service unavailable", "fault 503", None),
    "504": (504, "Gateway timeout", "fault 504", None),
    "retry-after": (503, "Service unavailable", "retry-after", "2"),
}


def test_every_fault_name_is_covered_here() -> None:
    others = {"ok", "timeout", "reset", "truncated", "text", "html", "json", "json-result"}
    others |= {"oversized", "trickle"}
    assert set(FAULT_NAMES) == set(ERROR_FAULTS) | others
    assert len(FAULT_NAMES) == len(set(FAULT_NAMES))
    assert LLM_FAULT_NAMES == ("ok", "timeout", "500", "401", "429", "empty", "garbage", "short")


@pytest.mark.parametrize("name", sorted(ERROR_FAULTS))
def test_error_faults_answer_the_common_workers_json(
    start_worker: StartWorker, client: httpx.Client, name: str
) -> None:
    status, error, details_piece, retry_after = ERROR_FAULTS[name]
    url = start_worker(fast=True)

    response = client.get(f"{url}/flux", params={"prompt": "a fox"}, headers={FAULT_HEADER: name})

    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"error", "details"}
    assert body["error"] == error
    assert details_piece in body["details"]
    assert response.headers.get("retry-after") == retry_after


def test_error_bodies_say_what_the_bots_client_looks_for(
    start_worker: StartWorker, client: httpx.Client
) -> None:
    url = start_worker(fast=True)

    def details(name: str) -> str:
        return str(flux(client, url, fault=name).json()["details"])

    quota = details("429-quota")
    assert "3036" in quota
    assert "daily free allocation" in quota
    assert "neurons" in quota
    assert "filtered" in details("500-nsfw")
    # Only the quota fault may look like a quota, only the NSFW one like a filter.
    for name in set(ERROR_FAULTS) - {"429-quota", "500-nsfw"}:
        text = details(name).lower()
        assert "3036" not in text
        assert "neurons" not in text
        assert "nsfw" not in text
        assert "filtered" not in text


def test_text_fault_is_a_200_text_plain(start_worker: StartWorker, client: httpx.Client) -> None:
    url = start_worker(fast=True)

    response = flux(client, url, fault="text")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert response.text == "missing prompt"


def test_html_fault_is_a_200_html_page(start_worker: StartWorker, client: httpx.Client) -> None:
    url = start_worker(fast=True)

    response = flux(client, url, fault="html")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert response.text.startswith("<!DOCTYPE html>")
    assert "</html>" in response.text


@pytest.mark.parametrize(
    ("name", "path"), [("json", ("image",)), ("json-result", ("result", "image"))]
)
def test_json_faults_carry_a_base64_jpeg(
    start_worker: StartWorker, client: httpx.Client, name: str, path: tuple[str, ...]
) -> None:
    url = start_worker()

    # On the POST contract too: a worker that forwards the model's raw JSON.
    response = client.post(f"{url}/sdxl", json={"prompt": f"a fox [fault:{name}]"})

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    payload: object = response.json()
    for key in path:
        assert isinstance(payload, dict)
        payload = payload[key]
    assert isinstance(payload, str)
    data = base64.b64decode(payload, validate=True)
    assert data.startswith(JPEG_MAGIC)
    assert image_size(data) == (512, 512)


def test_timeout_fault_never_answers(make_worker: WorkerFactory) -> None:
    worker = make_worker(fast=True)

    with (
        httpx.Client(timeout=HANG_TIMEOUT_S, verify=TLS) as quick,
        pytest.raises(httpx.ReadTimeout),
    ):
        flux(quick, worker.url, fault="timeout")

    assert worker.served == [("/flux", "timeout")]


def test_reset_fault_resets_the_connection_mid_body(
    start_worker: StartWorker, client: httpx.Client
) -> None:
    url = start_worker(fast=True)

    with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
        flux(client, url, fault="reset")

    # The worker itself is fine afterwards.
    assert flux(client, url).status_code == 200


def test_reset_fault_sends_the_head_before_resetting(
    start_worker: StartWorker, client: httpx.Client
) -> None:
    url = start_worker(fast=True)
    received = bytearray()

    def read_all(response: httpx.Response) -> None:
        for chunk in response.iter_bytes():
            received.extend(chunk)

    with client.stream("GET", f"{url}/flux", params={"prompt": "a fox", "fault": "reset"}) as r:
        assert r.status_code == 200
        declared = int(r.headers["content-length"])
        with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
            read_all(r)

    assert len(received) < declared


def test_truncated_fault_announces_more_than_it_sends(
    start_worker: StartWorker, client: httpx.Client
) -> None:
    url = start_worker(fast=True)

    with pytest.raises(httpx.RemoteProtocolError, match=r"incomplete|complete message body"):
        client.post(f"{url}/sdxl", json={"prompt": "a fox"}, headers={FAULT_HEADER: "truncated"})


def test_oversized_fault_streams_the_whole_declared_body(
    start_worker: StartWorker, client: httpx.Client
) -> None:
    size = 2 * 1024 * 1024
    url = start_worker(fast=True, oversized_bytes=size)
    received = bytearray()
    chunks = 0

    with client.stream("GET", f"{url}/flux", params={"prompt": "a fox [fault:oversized]"}) as r:
        assert r.status_code == 200
        assert r.headers["content-type"] == "image/jpeg"
        assert int(r.headers["content-length"]) == size
        for chunk in r.iter_bytes():
            received += chunk
            chunks += 1

    assert len(received) == size
    assert received.startswith(JPEG_MAGIC)
    assert chunks > 1


def test_trickle_fault_delivers_a_valid_image_slowly(
    start_worker: StartWorker, client: httpx.Client
) -> None:
    url = start_worker(trickle_delay_ms=20)

    started = time.monotonic()
    response = client.post(f"{url}/sdxl", json={"prompt": "a fox [fault:trickle]"})
    elapsed = time.monotonic() - started

    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"
    assert image_size(response.content) == (512, 512)
    assert elapsed >= (TRICKLE_CHUNKS - 1) * 0.02 * 0.9


def test_trickle_with_a_tiny_delay_is_quick(
    start_worker: StartWorker, client: httpx.Client
) -> None:
    url = start_worker(fast=True, trickle_delay_ms=0)

    response = flux(client, url, fault="trickle")

    assert response.status_code == 200
    assert response.content.startswith(JPEG_MAGIC)
    assert image_size(response.content) == (FAST_SIZE_PX, FAST_SIZE_PX)


@pytest.mark.parametrize("spec", ["503*0", "503*", "503*x", "*2", ""])
def test_malformed_repeat_counts_are_unknown_faults(spec: str) -> None:
    with pytest.raises(ValueError, match="fault"):
        parse_fault(spec)


def test_parse_fault() -> None:
    assert parse_fault("503").limit is None
    assert parse_fault("503*2").text == "503*2"
    assert parse_fault(" JSON-Result*10 ").name == "json-result"


# -- the bot's own client against the faults


def _model(url: str, contract: Contract) -> ModelSpec:
    path = "/flux" if contract is Contract.GET else "/sdxl"
    return ModelSpec(name=path[1:], contract=contract, url=f"{url}{path}")


async def _no_sleep(_seconds: float) -> None:
    return None


@pytest.mark.parametrize(
    ("fault", "expected"),
    [
        ("ok", None),
        ("json", None),
        ("json-result", None),
        ("trickle", None),
        ("400", WorkerBadRequest),
        ("401", WorkerAuthError),
        ("413", WorkerBadRequest),
        ("429", WorkerGaveUp),
        ("429-quota", QuotaExhausted),
        ("500", WorkerGaveUp),
        ("500-nsfw", ContentFiltered),
        ("500-capacity", WorkerGaveUp),
        ("retry-after", WorkerGaveUp),
        ("timeout", WorkerGaveUp),
        ("reset", WorkerGaveUp),
        ("truncated", WorkerGaveUp),
        ("text", InvalidImage),
        ("html", InvalidImage),
        ("oversized", ImageTooLarge),
    ],
)
async def test_the_bots_client_reads_each_fault_as_intended(
    start_worker: StartWorker, fault: str, expected: type[GenerationError] | None
) -> None:
    url = start_worker(fast=True, oversized_bytes=2_000_000, trickle_delay_ms=0)
    async with build_http_client(connect_timeout_s=2.0, read_timeout_s=HANG_TIMEOUT_S) as http:
        client = WorkerClient(
            http, max_image_bytes=1_000_000, retry_budget_s=60.0, max_attempts=1, sleep=_no_sleep
        )
        result = await client.generate(
            _model(url, Contract.GET), GenerationParams(prompt=f"a fox [fault:{fault}]")
        )

    if expected is None:
        assert result.success, result.error
    else:
        assert isinstance(result.error, expected)


async def test_a_repeat_limited_fault_is_retried_through_by_the_bots_client(
    make_worker: WorkerFactory,
) -> None:
    worker = make_worker(fast=True)
    async with build_http_client(connect_timeout_s=2.0, read_timeout_s=5.0) as http:
        client = WorkerClient(
            http, max_image_bytes=1_000_000, retry_budget_s=60.0, max_attempts=4, sleep=_no_sleep
        )
        image = await client.fetch_image(
            _model(worker.url, Contract.POST), GenerationParams(prompt="a fox [fault:503*2]")
        )

    assert image.mime_type == "image/png"
    assert worker.served == [("/sdxl", "503"), ("/sdxl", "503"), ("/sdxl", "ok")]

"""The development worker's server over real loopback HTTP: contracts, refusals, lifecycle."""

from __future__ import annotations

import logging
import threading
import time

import httpx
import pytest

from sakaibot.devworker import DevWorker, DevWorkerConfig
from tests.support.devworker import (
    API_KEY,
    FAULT_HEADER,
    JPEG_MAGIC,
    PNG_MAGIC,
    TLS,
    StartWorker,
    WorkerFactory,
    flux,
    image_size,
)


def test_get_flux_answers_a_jpeg(start_worker: StartWorker, client: httpx.Client) -> None:
    url = start_worker()

    response = client.get(f"{url}/flux", params={"prompt": "a red fox in the snow"})

    assert response.status_code == 200
    assert response.headers["content-type"] == "image/jpeg"
    assert response.content.startswith(JPEG_MAGIC)
    assert image_size(response.content) == (512, 512)


def test_post_sdxl_answers_a_png(start_worker: StartWorker, client: httpx.Client) -> None:
    url = start_worker()

    response = client.post(f"{url}/sdxl", json={"prompt": "a lighthouse at dusk"})

    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"
    assert response.content.startswith(PNG_MAGIC)


def test_sdxl_requires_the_bearer_when_a_key_is_set(
    start_worker: StartWorker, client: httpx.Client
) -> None:
    url = start_worker(api_key=API_KEY)
    body = {"prompt": "a lighthouse"}

    missing = client.post(f"{url}/sdxl", json=body)
    wrong = client.post(f"{url}/sdxl", json=body, headers={"Authorization": "Bearer nope"})
    right = client.post(f"{url}/sdxl", json=body, headers={"Authorization": f"Bearer {API_KEY}"})

    assert missing.status_code == 401
    assert missing.json() == {"error": "Unauthorized"}
    assert wrong.status_code == 401
    assert right.status_code == 200
    assert right.content.startswith(PNG_MAGIC)


def test_the_key_is_checked_before_the_body(
    start_worker: StartWorker, client: httpx.Client
) -> None:
    url = start_worker(api_key=API_KEY)

    response = client.post(f"{url}/sdxl", content=b"not json")

    assert response.status_code == 401


@pytest.mark.parametrize(
    ("method", "path", "kwargs"),
    [
        ("GET", "/flux", {}),
        ("GET", "/flux", {"params": {"prompt": "   "}}),
        ("POST", "/sdxl", {"json": {}}),
        ("POST", "/sdxl", {"json": {"prompt": ""}}),
        ("POST", "/sdxl", {"json": {"prompt": 42}}),
    ],
)
def test_a_missing_prompt_is_a_400(
    start_worker: StartWorker,
    client: httpx.Client,
    method: str,
    path: str,
    kwargs: dict[str, object],
) -> None:
    url = start_worker()

    response = client.request(method, f"{url}{path}", **kwargs)  # type: ignore[arg-type]

    assert response.status_code == 400
    assert response.json() == {"error": "Prompt is required"}


@pytest.mark.parametrize("body", [b"{not json", b"[1, 2]", b"\xff\xfe"])
def test_a_bad_json_body_is_a_400(
    start_worker: StartWorker, client: httpx.Client, body: bytes
) -> None:
    url = start_worker()

    response = client.post(
        f"{url}/sdxl", content=body, headers={"Content-Type": "application/json"}
    )

    assert response.status_code == 400
    assert "error" in response.json()


def test_a_non_integer_size_is_a_400(start_worker: StartWorker, client: httpx.Client) -> None:
    url = start_worker()

    response = client.get(f"{url}/flux", params={"prompt": "a fox", "width": "wide"})

    assert response.status_code == 400
    assert response.json() == {"error": "width must be an integer"}


@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", "/flux"), ("GET", "/sdxl"), ("PUT", "/sdxl"), ("DELETE", "/flux")],
)
def test_the_wrong_method_is_a_405(
    start_worker: StartWorker, client: httpx.Client, method: str, path: str
) -> None:
    url = start_worker()

    response = client.request(method, f"{url}{path}", params={"prompt": "a fox"})

    assert response.status_code == 405
    assert response.json() == {"error": "Not allowed"}


def test_an_unknown_path_is_a_404(start_worker: StartWorker, client: httpx.Client) -> None:
    url = start_worker()

    response = client.get(f"{url}/midjourney", params={"prompt": "a fox"})

    assert response.status_code == 404


def test_health_counts_image_requests(client: httpx.Client) -> None:
    worker = DevWorker(DevWorkerConfig())
    with worker as url:
        client.get(f"{url}/flux", params={"prompt": "one"})
        client.post(f"{url}/sdxl", json={"prompt": "two"})
        client.post(f"{url}/flux")  # refused, still a request the worker saw

        health = client.get(f"{url}/health")

        assert health.status_code == 200
        assert health.json() == {"ok": True, "requests": 3}
        assert worker.request_count == 3


@pytest.mark.parametrize("fail_status", [503, 429, 500])
def test_fail_rate_one_always_fails(
    start_worker: StartWorker, client: httpx.Client, fail_status: int
) -> None:
    url = start_worker(fail_rate=1.0, fail_status=fail_status)

    flux = client.get(f"{url}/flux", params={"prompt": "a fox"})
    sdxl = client.post(f"{url}/sdxl", json={"prompt": "a fox"})

    for response in (flux, sdxl):
        assert response.status_code == fail_status
        assert response.json() == {
            "error": "Failed to generate image",
            "details": "development worker: injected failure",
        }
        if fail_status in (429, 503):
            assert response.headers["retry-after"] == "1"
        else:
            assert "retry-after" not in response.headers


def test_failures_are_reproducible_for_a_seed(
    start_worker: StartWorker, client: httpx.Client
) -> None:
    def outcomes(url: str) -> list[int]:
        return [
            client.get(f"{url}/flux", params={"prompt": f"fox {i}"}).status_code for i in range(20)
        ]

    first = outcomes(start_worker(fail_rate=0.5, seed=7, fast=True))
    second = outcomes(start_worker(fail_rate=0.5, seed=7, fast=True))

    assert first == second
    assert set(first) == {200, 503}


def test_the_authorization_header_is_never_logged(
    start_worker: StartWorker, client: httpx.Client, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="sakaibot.devworker")
    url = start_worker(api_key=API_KEY)

    client.post(f"{url}/sdxl", json={"prompt": "a fox"}, headers={"Authorization": "Bearer x"})
    client.post(
        f"{url}/sdxl", json={"prompt": "a fox"}, headers={"Authorization": f"Bearer {API_KEY}"}
    )

    assert "POST /sdxl -> 401" in caplog.text
    assert "POST /sdxl -> 200" in caplog.text
    assert API_KEY not in caplog.text
    assert "Bearer" not in caplog.text


def test_stop_drops_idle_keep_alive_connections(client: httpx.Client) -> None:
    worker = DevWorker(DevWorkerConfig(fast=True))
    url = worker.start()
    assert client.get(f"{url}/health").status_code == 200  # leaves a pooled connection

    worker.stop()

    with pytest.raises(httpx.TransportError):
        client.get(f"{url}/health")


def test_start_twice_is_refused_and_stop_twice_is_harmless() -> None:
    worker = DevWorker()
    worker.start()
    try:
        with pytest.raises(RuntimeError):
            worker.start()
    finally:
        worker.stop()
    worker.stop()


@pytest.mark.parametrize(
    "fields",
    [
        {"fail_rate": 1.5},
        {"fail_rate": -0.1},
        {"latency_ms": -1},
        {"llm_latency_ms": -1},
        {"fail_status": 200},
    ],
)
def test_config_rejects_nonsense(fields: dict[str, object]) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 (the message is checked by eye)
        DevWorkerConfig(**fields)  # type: ignore[arg-type]


def test_latency_is_added_before_answering(start_worker: StartWorker, client: httpx.Client) -> None:
    url = start_worker(latency_ms=100, fast=True)

    response = client.get(f"{url}/flux", params={"prompt": "a fox"})

    assert response.status_code == 200
    assert response.elapsed.total_seconds() >= 0.1


def test_llm_latency_is_added_before_the_llm_answers(
    start_worker: StartWorker, client: httpx.Client
) -> None:
    url = start_worker(llm_latency_ms=100, fast=True)

    response = client.post(
        f"{url}/v1/chat/completions",
        json={"model": "m", "messages": [{"role": "user", "content": "a fox"}]},
    )

    assert response.status_code == 200
    assert response.elapsed.total_seconds() >= 0.1
    image = client.get(f"{url}/flux", params={"prompt": "a fox"})
    assert image.elapsed.total_seconds() < 0.1  # images are not slowed by it


def test_serve_forever_returns_once_stopped(client: httpx.Client) -> None:
    worker = DevWorker(DevWorkerConfig(fast=True))
    urls: list[str] = []
    ready = threading.Event()

    def on_ready(url: str) -> None:
        urls.append(url)
        ready.set()

    thread = threading.Thread(target=worker.serve_forever, kwargs={"on_ready": on_ready})
    thread.start()
    try:
        assert ready.wait(timeout=5)
        assert client.get(f"{urls[0]}/health").json()["ok"] is True
    finally:
        worker.stop()
        thread.join(timeout=5)

    assert not thread.is_alive()


# -- selecting a fault


def test_the_header_picks_a_fault(start_worker: StartWorker, client: httpx.Client) -> None:
    url = start_worker(fast=True)

    response = client.post(f"{url}/sdxl", json={"prompt": "a fox"}, headers={FAULT_HEADER: "502"})

    assert response.status_code == 502


def test_the_query_parameter_picks_a_fault(start_worker: StartWorker, client: httpx.Client) -> None:
    url = start_worker(fast=True)

    assert flux(client, url, fault="504").status_code == 504
    # A POST worker URL may carry it too (the bot keeps a worker URL's own query).
    assert client.post(f"{url}/sdxl?fault=408", json={"prompt": "a fox"}).status_code == 408


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_a_prompt_marker_picks_a_fault(
    start_worker: StartWorker, client: httpx.Client, method: str
) -> None:
    url = start_worker(fast=True)
    prompt = "a fox in the snow [fault:500-nsfw], golden hour"

    if method == "GET":
        response = flux(client, url, prompt)
    else:
        response = client.post(f"{url}/sdxl", json={"prompt": prompt})

    assert response.status_code == 500
    assert "NSFW" in response.json()["details"]


def test_the_run_fault_applies_to_every_request(
    start_worker: StartWorker, client: httpx.Client
) -> None:
    url = start_worker(fast=True, fault="429-quota")

    assert flux(client, url).status_code == 429
    assert client.post(f"{url}/sdxl", json={"prompt": "a wolf"}).status_code == 429
    assert client.get(f"{url}/health").status_code == 200


def test_per_request_beats_per_run_header_first(
    start_worker: StartWorker, client: httpx.Client
) -> None:
    url = start_worker(fast=True, fault="503")

    marker = flux(client, url, "a fox [fault:502]")
    query = client.get(f"{url}/flux", params={"prompt": "a fox [fault:502]", "fault": "504"})
    header = client.get(
        f"{url}/flux",
        params={"prompt": "a fox [fault:502]", "fault": "504"},
        headers={FAULT_HEADER: "408"},
    )
    healthy = flux(client, url, "a fox [fault:ok]")

    assert [marker.status_code, query.status_code, header.status_code] == [502, 504, 408]
    assert healthy.status_code == 200
    assert healthy.content.startswith(JPEG_MAGIC)


def test_fault_names_ignore_case_and_spaces(
    start_worker: StartWorker, client: httpx.Client
) -> None:
    url = start_worker(fast=True)

    assert flux(client, url, "a fox [FAULT: Retry-After ]").status_code == 503
    assert flux(client, url, fault=" 429-QUOTA ").status_code == 429


def test_a_repeat_limited_fault_counts_per_prompt(
    make_worker: WorkerFactory, client: httpx.Client
) -> None:
    worker = make_worker(fast=True)
    url = worker.url

    first = [flux(client, url, "a fox [fault:503*2]").status_code for _ in range(4)]
    other = [flux(client, url, "a wolf [fault:503*2]").status_code for _ in range(3)]
    sdxl = client.post(f"{url}/sdxl", json={"prompt": "a fox [fault:503*2]"})

    assert first == [503, 503, 200, 200]
    assert other == [503, 503, 200]
    assert sdxl.status_code == 200  # the count belongs to the prompt, on any path
    assert [what for _path, what in worker.served] == [
        *["503", "503", "ok", "ok"],
        *["503", "503", "ok"],
        "ok",
    ]


def test_a_repeat_limited_header_and_run_fault_count_per_prompt(
    start_worker: StartWorker, client: httpx.Client
) -> None:
    url = start_worker(fast=True, fault="429*1")
    headers = {FAULT_HEADER: "502*1"}

    run = [flux(client, url, "a fox").status_code for _ in range(2)]
    header = [
        client.post(f"{url}/sdxl", json={"prompt": "a cat"}, headers=headers).status_code
        for _ in range(2)
    ]

    assert run == [429, 200]
    assert header == [502, 200]


@pytest.mark.parametrize(
    "how",
    [
        {"headers": {FAULT_HEADER: "teapot"}},
        {"params": {"prompt": "a fox", "fault": "teapot"}},
        {"params": {"prompt": "a fox [fault:teapot]"}},
    ],
)
def test_an_unknown_fault_is_a_400(
    make_worker: WorkerFactory, client: httpx.Client, how: dict[str, object]
) -> None:
    worker = make_worker(fast=True)
    how = {"params": {"prompt": "a fox"}, **how}

    response = client.get(f"{worker.url}/flux", **how)  # type: ignore[arg-type]

    assert response.status_code == 400
    body = response.json()
    assert body["error"] == "unknown fault teapot"
    assert body["details"].startswith("known: ok, 400,")
    assert "json-result" in body["details"]
    assert worker.served == [("/flux", "refused:400")]


@pytest.mark.parametrize(
    "fields",
    [
        {"fault": "teapot"},
        {"fault": "503*0"},
        {"oversized_bytes": 0},
        {"trickle_delay_ms": -1},
    ],
)
def test_config_rejects_bad_fault_settings(fields: dict[str, object]) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 (the message is checked by eye)
        DevWorkerConfig(**fields)  # type: ignore[arg-type]


def test_fail_rate_still_works_and_a_fault_takes_precedence(
    make_worker: WorkerFactory, client: httpx.Client
) -> None:
    worker = make_worker(fast=True, fail_rate=1.0, fail_status=500)

    rolled = flux(client, worker.url)
    faulted = flux(client, worker.url, fault="text")

    assert rolled.status_code == 500
    assert rolled.json()["details"] == "development worker: injected failure"
    assert faulted.status_code == 200
    assert faulted.text == "missing prompt"
    assert worker.served == [("/flux", "fail-rate:500"), ("/flux", "text")]


def test_served_logs_every_request_thread_safely(
    make_worker: WorkerFactory, client: httpx.Client
) -> None:
    worker = make_worker(fast=True, api_key=API_KEY)
    auth = {"Authorization": f"Bearer {API_KEY}"}

    flux(client, worker.url)
    flux(client, worker.url, fault="503")
    client.post(f"{worker.url}/sdxl", json={"prompt": "a fox"})  # no bearer
    client.post(f"{worker.url}/sdxl", json={"prompt": "[fault:json]"}, headers=auth)
    client.get(f"{worker.url}/health")  # not an image or LLM request: not logged

    def hammer() -> None:
        with httpx.Client(timeout=10.0, verify=TLS) as own:
            for _ in range(5):
                flux(own, worker.url, fault="html")

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    served = worker.served
    assert served[:4] == [
        ("/flux", "ok"),
        ("/flux", "503"),
        ("/sdxl", "refused:401"),
        ("/sdxl", "json"),
    ]
    assert served[4:] == [("/flux", "html")] * 20
    served.clear()  # a copy
    assert len(worker.served) == 24


def test_latency_comes_before_a_fault(start_worker: StartWorker, client: httpx.Client) -> None:
    url = start_worker(fast=True, latency_ms=100)

    response = flux(client, url, fault="503")

    assert response.status_code == 503
    assert response.elapsed.total_seconds() >= 0.1


# -- stopping while faults are in progress


def test_stop_ends_hanging_and_trickling_handlers_promptly() -> None:
    worker = DevWorker(DevWorkerConfig(fast=True, trickle_delay_ms=60_000))
    url = worker.start()
    errors: list[BaseException] = []

    def call(fault: str) -> None:
        with httpx.Client(timeout=10.0, verify=TLS) as own:
            try:
                flux(own, url, fault=fault)
            except httpx.TransportError as exc:
                errors.append(exc)

    threads = [threading.Thread(target=call, args=(name,)) for name in ("timeout", "trickle")]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 5
    while len(worker.served) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sorted(what for _path, what in worker.served) == ["timeout", "trickle"]

    started = time.monotonic()
    worker.stop()
    stopped_in = time.monotonic() - started
    for thread in threads:
        thread.join(timeout=5)

    assert stopped_in < 1.0
    assert not any(thread.is_alive() for thread in threads)
    assert len(errors) == 2  # neither client got an answer


def test_a_hanging_handler_notices_the_client_left(make_worker: WorkerFactory) -> None:
    worker = make_worker(fast=True)

    with httpx.Client(timeout=0.1, verify=TLS) as quick, pytest.raises(httpx.ReadTimeout):
        flux(quick, worker.url, fault="timeout")

    assert worker.wait_idle(timeout_s=2.0)

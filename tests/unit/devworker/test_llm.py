"""The development LLM through the OpenAI SDK and raw HTTP: answers, faults, refusals."""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from sakaibot.devworker import DEV_LLM_MODEL, DEV_LLM_SUFFIX
from tests.support.devworker import (
    API_KEY,
    FAULT_HEADER,
    HANG_TIMEOUT_S,
    TLS,
    StartWorker,
    WorkerFactory,
)


def _llm(url: str, timeout: float = 0.5) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0, timeout=timeout)


async def _ask(llm: openai.AsyncOpenAI, prompt: str, model: str = "any-model") -> str | None:
    completion = await llm.chat.completions.create(
        model=model,
        messages=[
            {"role": "system", "content": "You improve prompts."},
            {"role": "user", "content": prompt},
        ],
    )
    return completion.choices[0].message.content


async def test_the_llm_enhances_deterministically(make_worker: WorkerFactory) -> None:
    worker = make_worker(fast=True)

    async with _llm(worker.url) as llm:
        first = await _ask(llm, "a red fox in the snow")
        second = await _ask(llm, "a red fox in the snow")
        marked = await _ask(llm, "a fox [fault:503*2]")

    assert first == f"a red fox in the snow{DEV_LLM_SUFFIX}"
    assert first == second
    # An image fault marker survives, so it reaches the worker after enhancement.
    assert marked == f"a fox [fault:503*2]{DEV_LLM_SUFFIX}"
    assert worker.served == [("/v1/chat/completions", "ok")] * 3


async def test_the_llm_answers_a_chat_completion_with_the_model_echoed(
    start_worker: StartWorker,
) -> None:
    url = start_worker(fast=True, api_key=API_KEY)  # the image key is not the LLM's

    async with httpx.AsyncClient(timeout=5.0, verify=TLS) as http:
        response = await http.post(
            f"{url}/v1/chat/completions",
            json={
                "model": "m1",
                "messages": [{"role": "user", "content": [{"type": "text", "text": "a cat"}]}],
            },
        )

    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "chat.completion"
    assert body["model"] == "m1"
    assert body["choices"][0]["message"] == {
        "role": "assistant",
        "content": f"a cat{DEV_LLM_SUFFIX}",
    }
    assert body["choices"][0]["finish_reason"] == "stop"


async def test_the_llm_lists_its_model(start_worker: StartWorker) -> None:
    url = start_worker(fast=True)

    async with _llm(url) as llm:
        models = await llm.models.list()

    assert [model.id for model in models.data] == [DEV_LLM_MODEL]


async def test_llm_500_fault(start_worker: StartWorker) -> None:
    url = start_worker(fast=True)

    async with _llm(url) as llm:
        with pytest.raises(openai.InternalServerError):
            await _ask(llm, "a fox [llm:500]")
        assert await _ask(llm, "a fox") == f"a fox{DEV_LLM_SUFFIX}"


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        ("401", openai.AuthenticationError),
        ("429", openai.RateLimitError),
        ("timeout", openai.APITimeoutError),
    ],
)
async def test_llm_error_faults(
    start_worker: StartWorker, fault: str, error: type[Exception]
) -> None:
    url = start_worker(fast=True)

    async with _llm(url, timeout=HANG_TIMEOUT_S) as llm:
        with pytest.raises(error):
            await _ask(llm, f"a fox [llm:{fault}]")


@pytest.mark.parametrize(("fault", "content"), [("empty", ""), ("short", "ok")])
async def test_llm_useless_answer_faults(
    start_worker: StartWorker, fault: str, content: str
) -> None:
    url = start_worker(fast=True)

    async with _llm(url) as llm:
        assert await _ask(llm, f"a fox [llm:{fault}]") == content


async def test_llm_garbage_fault_is_a_200_that_is_not_json(start_worker: StartWorker) -> None:
    url = start_worker(fast=True)
    body = {"model": "m", "messages": [{"role": "user", "content": "a fox [llm:garbage]"}]}

    async with httpx.AsyncClient(timeout=5.0, verify=TLS) as http:
        response = await http.post(f"{url}/v1/chat/completions", json=body)

    assert response.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        json.loads(response.content)


async def test_llm_fault_by_header_and_repeat_count(make_worker: WorkerFactory) -> None:
    worker = make_worker(fast=True)
    async with httpx.AsyncClient(timeout=5.0, verify=TLS) as http:

        async def status(headers: dict[str, str], prompt: str = "a fox") -> int:
            body = {"model": "m", "messages": [{"role": "user", "content": prompt}]}
            response = await http.post(
                f"{worker.url}/v1/chat/completions", json=body, headers=headers
            )
            return response.status_code

        assert await status({"X-SakaiBot-LLM-Fault": "429"}) == 429
        assert await status({FAULT_HEADER: "401"}) == 401
        # The LLM header wins over the generic one, and both over the marker.
        assert await status({"X-SakaiBot-LLM-Fault": "500", FAULT_HEADER: "401"}) == 500
        assert await status({FAULT_HEADER: "ok"}, "a fox [llm:500]") == 200
        assert [await status({}, "a cat [llm:500*1]") for _ in range(2)] == [500, 200]
        # An image-only fault name is unknown to the LLM.
        unknown = await http.post(
            f"{worker.url}/v1/chat/completions",
            json={"model": "m", "messages": [{"role": "user", "content": "[llm:oversized]"}]},
        )

    assert unknown.status_code == 400
    error = unknown.json()["error"]
    assert error["message"] == "unknown fault oversized"
    assert error["details"].startswith("known: ok, timeout,")
    assert worker.served[-1] == ("/v1/chat/completions", "refused:400")


async def test_llm_refuses_nonsense_openai_style(start_worker: StartWorker) -> None:
    url = start_worker(fast=True)

    async with httpx.AsyncClient(timeout=5.0, verify=TLS) as http:
        no_model = await http.post(f"{url}/v1/chat/completions", json={"messages": []})
        not_json = await http.post(f"{url}/v1/chat/completions", content=b"{nope")
        wrong_method = await http.get(f"{url}/v1/chat/completions")

    assert no_model.status_code == 400
    assert no_model.json()["error"]["message"] == "model is required"
    assert not_json.status_code == 400
    assert wrong_method.status_code == 405
    assert wrong_method.json()["error"]["type"] == "invalid_request_error"


def test_llm_requests_are_not_image_requests(make_worker: WorkerFactory) -> None:
    worker = make_worker(fast=True)

    with httpx.Client(timeout=5.0, verify=TLS) as http:
        http.get(f"{worker.url}/v1/models")

    assert worker.request_count == 0
    assert worker.served == [("/v1/models", "ok")]

"""The development worker's stand-in for the prompt enhancer's LLM, and its faults.

``POST /v1/chat/completions`` answers an OpenAI chat completion whose content
is the user's prompt plus :data:`DEV_LLM_SUFFIX`, so an "enhanced" prompt is
deterministic and says where it came from; ``GET /v1/models`` lists
:data:`DEV_LLM_MODEL`. Any bearer, or none, is accepted, and any model name.

:data:`LLM_FAULT_NAMES` are what a real provider does wrong: a hang, an error
status with an OpenAI-style error body, an empty or useless answer, a body
that is not JSON. This module builds the answers; the server routes to them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence

from sakaibot.devworker.faults import HANG_MAX_S, LLM_MARKER, Reply

#: The one model ``GET /v1/models`` lists (any model name is accepted, though).
DEV_LLM_MODEL = "sakaibot-dev"
#: What the development LLM appends to the user's prompt: fixed and labelled.
DEV_LLM_SUFFIX = ", development LLM: soft light, rich detail"

_LLM_GARBAGE = b"<html><body>development LLM: this is not JSON (fault garbage)</body></html>"
#: A fixed creation time keeps every answer byte-for-byte reproducible.
_CREATED = 1_700_000_000


def enhance(prompt: str) -> str:
    """The development LLM's deterministic "enhancement": the prompt, labelled."""
    base = " ".join(LLM_MARKER.sub(" ", prompt).split())
    return f"{base}{DEV_LLM_SUFFIX}" if base else DEV_LLM_SUFFIX.lstrip(", ")


def last_user_text(messages: Sequence[object]) -> str:
    """The text of the last ``user`` message (``""`` when there is none)."""
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            return _message_text(message.get("content"))
    return ""


def _message_text(content: object) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # [{"type": "text", "text": "..."}, ...]
        parts = [
            part["text"]
            for part in content
            if isinstance(part, dict) and isinstance(part.get("text"), str)
        ]
        return " ".join(parts)
    return ""


def chat_completion(content: str, model: str, prompt: str) -> dict[str, object]:
    """A ``chat.completion`` object as OpenAI-compatible providers answer it."""
    digest = hashlib.sha256(f"{model}\x00{prompt}\x00{content}".encode("utf-8", "replace"))
    prompt_tokens = len(prompt.split()) + 1
    completion_tokens = len(content.split())
    return {
        "id": f"chatcmpl-sakaibot-dev-{digest.hexdigest()[:16]}",
        "object": "chat.completion",
        "created": _CREATED,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": "stop",
                "logprobs": None,
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


def models_list() -> dict[str, object]:
    """The answer of ``GET /v1/models``."""
    return {
        "object": "list",
        "data": [
            {
                "id": DEV_LLM_MODEL,
                "object": "model",
                "created": _CREATED,
                "owned_by": "sakaibot",
            }
        ],
    }


def openai_error(
    message: str,
    details: str | None = None,
    *,
    type_: str = "invalid_request_error",
    code: str | None = None,
) -> dict[str, object]:
    """An error body in the form the OpenAI SDK reads."""
    error: dict[str, object] = {"message": message, "type": type_, "param": None, "code": code}
    if details is not None:
        error["details"] = details
    return {"error": error}


ChatAnswer = Callable[[Reply, str, str], None]
"""Answers one chat request on a reply, given the model and the user's prompt."""


def _ok(reply: Reply, model: str, prompt: str) -> None:
    reply.send_json(200, chat_completion(enhance(prompt), model, prompt))


def _timeout(reply: Reply, model: str, prompt: str) -> None:
    reply.pause(HANG_MAX_S)
    reply.close_after()


def _error_500(reply: Reply, model: str, prompt: str) -> None:
    message = "development LLM: internal error (fault 500)"
    reply.send_json(500, openai_error(message, type_="server_error"))


def _error_401(reply: Reply, model: str, prompt: str) -> None:
    message = "development LLM: invalid API key (fault 401)"
    reply.send_json(401, openai_error(message, code="invalid_api_key"))


def _error_429(reply: Reply, model: str, prompt: str) -> None:
    message = "development LLM: rate limit reached (fault 429)"
    error = openai_error(message, type_="rate_limit_error", code="rate_limit_exceeded")
    reply.send_json(429, error, {"Retry-After": "1"})


def _empty(reply: Reply, model: str, prompt: str) -> None:
    reply.send_json(200, chat_completion("", model, prompt))


def _garbage(reply: Reply, model: str, prompt: str) -> None:
    reply.send(200, "application/json", _LLM_GARBAGE)


def _short(reply: Reply, model: str, prompt: str) -> None:
    reply.send_json(200, chat_completion("ok", model, prompt))


#: How the development LLM answers without a fault (``ok``) and with each fault.
_ANSWERS: Mapping[str, ChatAnswer] = {
    "ok": _ok,
    "timeout": _timeout,
    "500": _error_500,
    "401": _error_401,
    "429": _error_429,
    "empty": _empty,
    "garbage": _garbage,
    "short": _short,
}

#: Every fault name of the development LLM, ``ok`` first.
LLM_FAULT_NAMES: tuple[str, ...] = tuple(_ANSWERS)


def answer_chat(fault: str, reply: Reply, model: str, prompt: str) -> None:
    """Answer a chat request for ``model`` about ``prompt`` the way ``fault`` does."""
    _ANSWERS[fault](reply, model, prompt)

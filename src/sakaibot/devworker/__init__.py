"""A development image worker on loopback that speaks both worker contracts.

``sakaibot dev-worker``, ``sakaibot chat --local``, ``sakaibot generate
--local``, ``make demo``, the integration tests and the benchmarks run against
it instead of Cloudflare. It answers

- ``GET /flux?prompt=...`` (optional ``seed``, ``steps``, ``width``, ``height``)
  with a JPEG, like a Flux worker;
- ``POST /sdxl`` with a JSON body (``prompt``, optional ``negative_prompt``,
  ``width``, ``height``, ``num_steps``, ``seed``) and, when an API key is
  configured, ``Authorization: Bearer <key>``, with a PNG, like the common SDXL
  worker, including its error bodies;
- ``GET /health`` with ``{"ok": true, "requests": n}``;
- ``POST /v1/chat/completions`` and ``GET /v1/models`` as a stand-in for the
  prompt enhancer's LLM (:mod:`.llm`).

The image is never presented as a generated one: it is a labelled preview
(:mod:`.previews`) with the prompt written on it. Latency and failures can be
injected (``latency_ms``, ``fail_rate``, ``fail_status``; the dice are seeded),
and so can the fault modes of :mod:`.faults`, per run (``DevWorkerConfig.fault``)
or per request (the ``X-SakaiBot-Fault`` header, the ``fault`` query parameter,
a ``[fault:NAME]`` marker in the prompt). :attr:`DevWorker.served` records what
every request got.

The modules: :mod:`.server` (routes, contracts, lifecycle), :mod:`.faults` (the
fault catalogue and how each fault is served), :mod:`.previews` (the images),
:mod:`.llm` (the stand-in LLM). Only the standard library and Pillow are used.

Why the standard library's ``http.server``: a fault here is something a server
library exists to prevent. A reset needs ``SO_LINGER`` 0 on the accepted socket
before it is closed; a truncated body needs a ``Content-Length`` larger than the
bytes sent and then a close; a trickle needs body pieces written with pauses; a
hang needs an accepted request that is never answered, yet given up when the
worker stops or the client leaves. ``ThreadingHTTPServer`` hands each handler
its socket, so all four are a few lines. Under an ASGI server (uvicorn or
hypercorn, with starlette or not) the application never sees the socket, so a
reset cannot be expressed at all, and a body shorter than its
``Content-Length`` is an application error the server handles its own way
(uvicorn and hypercorn raise ``RuntimeError``), not a fault we control.
aiohttp can do all four through its transport, but only by working around its
response object; it would be a new dependency of the package for a development
tool, and the worker would need an event loop thread of its own for the
synchronous tests and tools that start it. So the standard library stays.
"""

from __future__ import annotations

from sakaibot.devworker.faults import (
    FAULT_HEADER,
    FAULT_NAMES,
    FAULT_QUERY_PARAMETER,
    LLM_FAULT_HEADER,
    TRICKLE_CHUNKS,
    FaultSpec,
    parse_fault,
    strip_markers,
)
from sakaibot.devworker.llm import DEV_LLM_MODEL, DEV_LLM_SUFFIX, LLM_FAULT_NAMES
from sakaibot.devworker.previews import (
    FAST_SIZE_PX,
    MAX_SIZE_PX,
    MIN_SIZE_PX,
    PREVIEW_LABEL,
    render_preview,
)
from sakaibot.devworker.server import DevWorker, DevWorkerConfig

__all__ = [
    "DEV_LLM_MODEL",
    "DEV_LLM_SUFFIX",
    "FAST_SIZE_PX",
    "FAULT_HEADER",
    "FAULT_NAMES",
    "FAULT_QUERY_PARAMETER",
    "LLM_FAULT_HEADER",
    "LLM_FAULT_NAMES",
    "MAX_SIZE_PX",
    "MIN_SIZE_PX",
    "PREVIEW_LABEL",
    "TRICKLE_CHUNKS",
    "DevWorker",
    "DevWorkerConfig",
    "FaultSpec",
    "parse_fault",
    "render_preview",
    "strip_markers",
]

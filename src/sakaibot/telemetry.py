"""What the core reports for the operator's dashboard, without knowing who listens.

The pipeline and the status scheduler tell a :class:`Telemetry` what happened
(a job ended, a flood wait, a cache hit); :mod:`sakaibot.metrics` turns that
into Prometheus metrics when ``METRICS_PORT`` is set, and :class:`NoTelemetry`
drops it otherwise. The core never imports the Prometheus library.
"""

from __future__ import annotations

from typing import Protocol

#: The outcome label of a job whose image reached the chat; a failed job's
#: outcome is its error's ``kind`` (a fixed set: the catalogue in errors.py).
DELIVERED = "delivered"


class Telemetry(Protocol):
    """Receives the events the operator's metrics are made of."""

    def job_ended(
        self, model: str, outcome: str, *, waited_s: float | None, generating_s: float | None
    ) -> None:
        """A job ended: :data:`DELIVERED` or its error's kind, with its step times if known."""
        ...

    def enhancer_fallback(self) -> None:
        """The LLM was asked to enhance a prompt and the original prompt was used instead."""
        ...

    def flood_wait(self) -> None:
        """The chat asked us to wait (a status edit or a delivery)."""
        ...

    def cache_hit(self, model: str) -> None:
        """A request was answered from the result cache."""
        ...


class NoTelemetry:
    """Nobody listens (``METRICS_PORT`` unset)."""

    def job_ended(
        self, model: str, outcome: str, *, waited_s: float | None, generating_s: float | None
    ) -> None:
        pass

    def enhancer_fallback(self) -> None:
        pass

    def flood_wait(self) -> None:
        pass

    def cache_hit(self, model: str) -> None:
        pass

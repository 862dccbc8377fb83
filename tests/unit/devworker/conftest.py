"""Fixtures for the development worker's tests: workers started here are stopped."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from sakaibot.devworker import DevWorker, DevWorkerConfig
from tests.support.devworker import TLS, StartWorker, WorkerFactory


@pytest.fixture
def start_worker() -> Iterator[StartWorker]:
    """Starts workers with the given config fields; every one is stopped afterwards."""
    workers: list[DevWorker] = []

    def start(**fields: object) -> str:
        worker = DevWorker(DevWorkerConfig(**fields))  # type: ignore[arg-type]
        workers.append(worker)
        return worker.start()

    yield start
    for worker in workers:
        worker.stop()


@pytest.fixture
def make_worker() -> Iterator[WorkerFactory]:
    """Like ``start_worker``, but hands back the started worker (for ``served``)."""
    workers: list[DevWorker] = []

    def make(**fields: object) -> DevWorker:
        worker = DevWorker(DevWorkerConfig(**fields))  # type: ignore[arg-type]
        workers.append(worker)
        worker.start()
        return worker

    yield make
    for worker in workers:
        worker.stop()


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10.0, verify=TLS) as http:
        yield http

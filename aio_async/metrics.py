"""Prometheus metrics (``pip install 'aio_async[prometheus]'``): what workers ran, and the queue's state.

Two sources, exposed in two places:

- **What a worker ran**, counted in the worker process once ``instrument()`` (or
  ``serve(port)``) was called there: ``aio_async_jobs_total{queue,outcome}`` (one per
  attempt, by its outcome: ``succeeded``, ``retrying``, ``failed``, ``snoozed``,
  ``cancelled``, ``lease_lost``, ``released``) and the histogram
  ``aio_async_job_duration_seconds{queue}`` (attempts that ran their function). They live in
  prometheus_client's default registry of that process, without a worker label (a worker's
  id changes at every start): each worker process serves its own, ``serve(port)`` starting
  prometheus_client's HTTP server, and Prometheus tells them apart by their ``instance``.
- **The queue's state**, read from the database at scrape time by ``QueueCollector`` in one
  aggregate query: ``aio_async_queue_jobs{queue,status}`` (``queued``, ``running``,
  ``waiting``), ``aio_async_queue_due_jobs{queue}`` (queued jobs whose time has come) and
  ``aio_async_queue_oldest_due_age_seconds{queue}`` (0 when none is due). ``metrics_view``
  serves it, with whatever this process's default registry holds, to staff users or to a
  request with ``Authorization: Bearer <AIO_ASYNC["HEALTH"]["TOKEN"]>`` (the token of the
  health endpoint); ``aio_async.urls`` routes it as ``metrics/``. Scrape it from one place
  only: every scrape is one query, the same for every scraper.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any
from wsgiref.simple_server import WSGIServer

from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from aio_async import signals
from aio_async.models import Status
from aio_async.readmodel import queue_states
from aio_async.values import Attempt, ErrorInfo, Outcome
from aio_async.views import FORBIDDEN, may_operate

try:
    from prometheus_client import (
        CONTENT_TYPE_LATEST,
        REGISTRY,
        CollectorRegistry,
        Counter,
        Histogram,
        generate_latest,
        start_http_server,
    )
    from prometheus_client.core import GaugeMetricFamily
    from prometheus_client.registry import Collector
except ImportError as exc:  # pragma: no cover - the message is the point
    raise ImportError(
        "aio_async.metrics needs prometheus_client: pip install 'aio_async[prometheus]'"
    ) from exc

__all__ = [
    "JOBS",
    "JOB_DURATION",
    "QueueCollector",
    "instrument",
    "is_instrumented",
    "metrics_view",
    "serve",
    "uninstrument",
]

JOBS = Counter("aio_async_jobs", "Attempts run by this worker, by queue and outcome.", ["queue", "outcome"])
JOB_DURATION = Histogram(
    "aio_async_job_duration_seconds",
    "How long attempts took, from the start of their function to their recorded end, by queue.",
    ["queue"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, float("inf")),
)

#: The statuses counted by ``aio_async_queue_jobs`` (finished jobs are history, not load).
_UNFINISHED = (Status.QUEUED, Status.RUNNING, Status.WAITING, Status.SUSPENDED)


class _Counting:
    """The worker's observer: counts attempts by outcome, and their durations."""

    async def started(self, attempt: Attempt, worker_id: str) -> bool:
        """Nothing to do at the start; True marks an attempt that ran its function."""
        return True

    def ended(
        self,
        state: Any,
        attempt: Attempt,
        worker_id: str,
        outcome: Outcome,
        duration: float,
        error: ErrorInfo | None,
    ) -> None:
        """Count the attempt; time it if it ran its function (refused jobs did not)."""
        JOBS.labels(attempt.queue, outcome.value).inc()
        if state is True:
            JOB_DURATION.labels(attempt.queue).observe(duration)


_counting = _Counting()
_observing = False


def instrument() -> None:
    """Count the attempts this process runs from now on (a worker's ``aio_async_jobs_total``)."""
    global _observing  # once per process
    signals.observe(_counting)
    _observing = True


def uninstrument() -> None:
    """Stop counting attempts in this process."""
    global _observing
    signals.unobserve(_counting)
    _observing = False


def is_instrumented() -> bool:
    """True while this process counts the attempts it runs."""
    return _observing


_served: dict[tuple[str, int], WSGIServer] = {}
_serving = threading.Lock()


def serve(port: int, addr: str = "0.0.0.0") -> WSGIServer:  # noqa: S104 - scraped from other hosts
    """Count this worker's attempts and serve its metrics on ``addr:port``; return the server.

    Call it in the worker process, before the worker starts; a second call for the same port
    returns the server already started. The page has the default registry (this process's
    counters, and prometheus_client's process metrics); the queue's state is
    ``metrics_view``'s, on the web side.
    """
    instrument()
    with _serving:
        if (addr, port) not in _served:
            _served[(addr, port)], _ = start_http_server(port, addr)
        return _served[(addr, port)]


class QueueCollector(Collector):
    """The queue's unfinished jobs per queue and status, and its oldest due job's age (the read model)."""

    def __init__(self, using: str | None = None) -> None:
        self.using = using

    def collect(self) -> Iterator[GaugeMetricFamily]:
        """Read the queue's state now (one aggregate query) and yield it as gauges."""
        now = timezone.now()
        states = queue_states(using=self.using, now=now, unfinished_only=True, with_queues=False)
        jobs = GaugeMetricFamily(
            "aio_async_queue_jobs", "Unfinished jobs in the queue, by status.", labels=["queue", "status"]
        )
        due_jobs = GaugeMetricFamily(
            "aio_async_queue_due_jobs", "Queued jobs whose time to run has come.", labels=["queue"]
        )
        age = GaugeMetricFamily(
            "aio_async_queue_oldest_due_age_seconds",
            "How long the oldest due job has waited (0 when none is due).",
            labels=["queue"],
        )
        for queue, state in states.items():
            for status in _UNFINISHED:
                jobs.add_metric([queue, status.value], state.counts.get(status.value, 0))
            due_jobs.add_metric([queue], state.due)
            age.add_metric([queue], round(state.oldest_due_age(now) or 0.0, 3))
        yield jobs
        yield due_jobs
        yield age

    def describe(self) -> Iterator[GaugeMetricFamily]:
        """Nothing: describing would cost a query at registration."""
        return iter(())


def _queue_page() -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(QueueCollector())
    return generate_latest(registry)


@never_cache
@require_GET
def metrics_view(request: HttpRequest) -> HttpResponse:
    """The queue's state and this process's metrics, in Prometheus's text format; 403 to others."""
    if not may_operate(request):
        return HttpResponse(f"{FORBIDDEN}\n", status=403, content_type="text/plain; charset=utf-8")
    return HttpResponse(_queue_page() + generate_latest(REGISTRY), content_type=CONTENT_TYPE_LATEST)

"""Prometheus metrics: a worker's counts of what it ran, and the queue's state read at scrape time."""

from __future__ import annotations

import datetime
import urllib.request
from collections.abc import Iterator

import pytest
from asgiref.sync import sync_to_async

pytest.importorskip("prometheus_client")

from django.contrib.auth.models import User
from django.db import connection
from django.test import Client, override_settings
from django.test.utils import CaptureQueriesContext
from django.urls import include, path
from django.utils import timezone
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from aio_async import metrics, schedule
from aio_async.conf import Backoff
from aio_async.models import Job, Status
from aio_async.values import Outcome
from tests.app import tasks
from tests.app.models import Record
from tests.conftest import beside, drain, until

pytestmark = pytest.mark.django_db(transaction=True)

# This module is the URLconf of the view's tests: the queue's URLs under /queue/.
urlpatterns = [path("queue/", include("aio_async.urls"))]

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def samples(text: str | bytes) -> Samples:
    """Every sample of a scrape, by name and sorted labels."""
    if isinstance(text, bytes):
        text = text.decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def jobs_total(found: Samples, queue: str, outcome: str) -> float:
    """``aio_async_jobs_total{queue,outcome}`` (0 when absent)."""
    return found.get(("aio_async_jobs_total", (("outcome", outcome), ("queue", queue))), 0.0)


@pytest.fixture(autouse=True)
def instrumented() -> Iterator[None]:
    """This process counts the attempts it runs, for the test."""
    metrics.instrument()
    yield
    metrics.uninstrument()


def test_a_workers_attempts_are_counted_by_queue_and_outcome_and_timed() -> None:
    before = samples(generate_latest(REGISTRY))
    schedule(tasks.write, ["a"], queue="counted")
    schedule(tasks.awrite, ["b"], queue="counted")
    schedule(tasks.write_then_fail, ["c"], queue="counted", max_attempts=2)
    schedule(tasks.asnooze, [1], queue="counted")
    schedule(tasks.add, [1, 2], queue="other")
    outcomes = drain(queues=("counted", "other"), backoff=Backoff(base=0, jitter=0))
    assert outcomes == {Outcome.SUCCEEDED: 4, Outcome.RETRYING: 1, Outcome.FAILED: 1, Outcome.SNOOZED: 1}
    after = samples(generate_latest(REGISTRY))
    expected = {
        ("counted", "succeeded"): 3,
        ("counted", "retrying"): 1,
        ("counted", "failed"): 1,
        ("counted", "snoozed"): 1,
        ("other", "succeeded"): 1,
        ("other", "failed"): 0,
    }
    for (queue, outcome), count in expected.items():
        assert jobs_total(after, queue, outcome) - jobs_total(before, queue, outcome) == count, (
            queue,
            outcome,
        )
    timed = ("aio_async_job_duration_seconds_count", (("queue", "counted"),))
    total = ("aio_async_job_duration_seconds_sum", (("queue", "counted"),))
    assert after[timed] - before.get(timed, 0) == 6
    assert after[total] - before.get(total, 0) > 0
    infinite = ("aio_async_job_duration_seconds_bucket", (("le", "+Inf"), ("queue", "counted")))
    assert after[infinite] == after[timed]


def test_serve_exposes_this_workers_counts_over_http() -> None:
    metrics.uninstrument()
    server = metrics.serve(0, "127.0.0.1")
    try:
        assert metrics.is_instrumented()
        assert metrics.serve(0, "127.0.0.1") is server
        schedule(tasks.add, [1, 2], queue="served")
        assert drain(queues=("served",)) == {Outcome.SUCCEEDED: 1}
        port = server.server_address[1]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            found = samples(response.read())
    finally:
        server.shutdown()
        server.server_close()
        metrics._served.clear()
    assert jobs_total(found, "served", "succeeded") == 1


def test_nothing_is_counted_once_uninstrumented() -> None:
    metrics.uninstrument()
    assert not metrics.is_instrumented()
    before = samples(generate_latest(REGISTRY))
    schedule(tasks.add, [1, 2], queue="uncounted")
    assert drain(queues=("uncounted",)) == {Outcome.SUCCEEDED: 1}
    after = samples(generate_latest(REGISTRY))
    assert jobs_total(after, "uncounted", "succeeded") == jobs_total(before, "uncounted", "succeeded") == 0


def queue_state() -> Samples:
    """A scrape of the queue collector alone."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(metrics.QueueCollector())
    return samples(generate_latest(registry))


def test_the_queue_collector_reads_depth_and_age_in_one_query() -> None:
    now = timezone.now()
    schedule(tasks.add, [1, 2], queue="mail", run_after=now - datetime.timedelta(seconds=90))
    schedule(tasks.add, [1, 3], queue="mail", run_after=now - datetime.timedelta(seconds=10))
    schedule(tasks.add, [1, 4], queue="mail", run_after=datetime.timedelta(hours=1))
    first = schedule(tasks.add, [2, 2], queue="reports")
    schedule(tasks.add, [2, 3], queue="reports", after=first)
    Job.objects.filter(pk=first.pk).update(status=Status.RUNNING)
    sleeping = schedule(tasks.add, [2, 4], queue="reports", run_after=now - datetime.timedelta(seconds=60))
    Job.objects.filter(pk=sleeping.pk).update(status=Status.SUSPENDED)  # in a durable sleep: not due
    schedule(tasks.add, [3, 3], queue="done")
    Job.objects.filter(queue="done").update(status=Status.SUCCEEDED)
    with CaptureQueriesContext(connection) as queries:
        found = queue_state()
    assert len(queries) == 1
    assert {key: value for key, value in found.items() if key[0] == "aio_async_queue_jobs"} == {
        ("aio_async_queue_jobs", (("queue", "mail"), ("status", "queued"))): 3,
        ("aio_async_queue_jobs", (("queue", "mail"), ("status", "running"))): 0,
        ("aio_async_queue_jobs", (("queue", "mail"), ("status", "waiting"))): 0,
        ("aio_async_queue_jobs", (("queue", "mail"), ("status", "suspended"))): 0,
        ("aio_async_queue_jobs", (("queue", "reports"), ("status", "queued"))): 0,
        ("aio_async_queue_jobs", (("queue", "reports"), ("status", "running"))): 1,
        ("aio_async_queue_jobs", (("queue", "reports"), ("status", "waiting"))): 1,
        ("aio_async_queue_jobs", (("queue", "reports"), ("status", "suspended"))): 1,
    }
    assert found[("aio_async_queue_due_jobs", (("queue", "mail"),))] == 2
    assert found[("aio_async_queue_due_jobs", (("queue", "reports"),))] == 0
    assert 90 <= found[("aio_async_queue_oldest_due_age_seconds", (("queue", "mail"),))] < 120
    assert found[("aio_async_queue_oldest_due_age_seconds", (("queue", "reports"),))] == 0


def test_an_empty_queue_has_no_series() -> None:
    assert queue_state() == {}


@override_settings(ROOT_URLCONF=__name__)
def test_the_view_serves_the_queue_and_this_process_to_staff_or_the_token() -> None:
    schedule(tasks.add, [1, 2], queue="viewed")
    assert drain(queues=("viewed",)) == {Outcome.SUCCEEDED: 1}
    schedule(tasks.add, [2, 2], queue="viewed")
    client = Client()
    assert client.get("/queue/metrics/").status_code == 403
    assert client.get("/queue/metrics/", headers={"authorization": "Bearer guess"}).status_code == 403
    User.objects.create_user("staff", password="pw", is_staff=True)
    client.login(username="staff", password="pw")
    response = client.get("/queue/metrics/")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain; version=")
    assert "no-cache" in response["Cache-Control"]
    found = samples(response.content)
    assert found[("aio_async_queue_jobs", (("queue", "viewed"), ("status", "queued")))] == 1
    assert jobs_total(found, "viewed", "succeeded") == 1  # this process ran it
    assert client.post("/queue/metrics/").status_code == 405


@override_settings(ROOT_URLCONF=__name__)
def test_the_view_opens_to_the_health_token() -> None:
    token = "a-probe-token-of-some-length"
    with override_settings(AIO_ASYNC={"HEALTH": {"TOKEN": token}}):
        client = Client()
        assert client.get("/queue/metrics/", headers={"authorization": "Bearer nope"}).status_code == 403
        response = client.get("/queue/metrics/", headers={"authorization": f"Bearer {token}"})
    assert response.status_code == 200
    assert "aio_async_jobs" in response.content.decode()


async def test_a_coroutine_job_interrupted_by_a_stopping_worker_is_counted_released() -> None:
    before = samples(generate_latest(REGISTRY))
    async with beside(queues=("interrupted",), shutdown_timeout=0.1) as executor:
        await sync_to_async(schedule)(tasks.await_cancel, ["x"], queue="interrupted")
        await until(lambda: Record.objects.filter(key="x").exists())
    assert dict(executor.outcomes) == {Outcome.RELEASED: 1}
    after = samples(generate_latest(REGISTRY))
    assert jobs_total(after, "interrupted", "released") - jobs_total(before, "interrupted", "released") == 1
    timed = ("aio_async_job_duration_seconds_count", (("queue", "interrupted"),))
    assert after[timed] == 1  # it ran its function, until the worker stopped it

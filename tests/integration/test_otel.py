"""Tracing with OpenTelemetry: a job's span continues the trace it was scheduled in."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

pytest.importorskip("opentelemetry.sdk")

from django.conf import settings
from django.test import override_settings
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

import aio_async
from aio_async import otel, schedule
from aio_async.conf import Backoff
from aio_async.models import Job
from aio_async.values import Outcome
from tests.app import tasks
from tests.app.models import Record
from tests.conftest import beside, drain, until

pytestmark = pytest.mark.django_db(transaction=True)

EXPORTER = InMemorySpanExporter()
PROVIDER = TracerProvider()
PROVIDER.add_span_processor(SimpleSpanProcessor(EXPORTER))
TRACER = PROVIDER.get_tracer("tests")


@aio_async.task
def traced(key: str) -> str:
    """A sync job that makes a span of its own, in its job thread."""
    with TRACER.start_as_current_span(f"inside {key}"):
        return key


@aio_async.task
async def atraced(key: str) -> str:
    """A coroutine job that makes a span of its own, on the worker's loop."""
    with TRACER.start_as_current_span(f"inside {key}"):
        return key


@pytest.fixture(autouse=True)
def instrumented() -> Iterator[None]:
    """Tracing on, into the in-memory exporter; off again after the test.

    This module's tasks run as a worker finds them: through ``ALLOWED_MODULES``.
    """
    EXPORTER.clear()
    otel.instrument(tracer_provider=PROVIDER)
    with override_settings(AIO_ASYNC={**settings.AIO_ASYNC, "ALLOWED_MODULES": ["tests.app", __name__]}):
        yield
    otel.uninstrument()
    EXPORTER.clear()


def spans() -> dict[str, ReadableSpan]:
    """The finished spans by name (one of each name in these tests)."""
    found = {span.name: span for span in EXPORTER.get_finished_spans()}
    assert len(found) == len(EXPORTER.get_finished_spans())
    return found


@pytest.mark.parametrize("function", [traced, atraced], ids=["sync", "coroutine"])
def test_a_jobs_span_is_a_child_of_the_span_that_scheduled_it_and_parent_of_the_jobs_own(
    function: aio_async.Task[[str], str],
) -> None:
    with TRACER.start_as_current_span("request") as request:
        job = function.schedule(["a"])
    assert set(Job.objects.get(pk=job.pk).meta[otel.OTEL_KEY]) == {"traceparent"}
    assert drain() == {Outcome.SUCCEEDED: 1}
    found = spans()
    span = found[f"aio_async.job {function.name}"]
    inside = found["inside a"]
    assert span.context is not None
    assert span.context.trace_id == request.get_span_context().trace_id
    assert span.parent is not None
    assert span.parent.span_id == request.get_span_context().span_id
    assert inside.parent is not None
    assert inside.parent.span_id == span.context.span_id  # the job's own spans are its children
    assert span.kind is SpanKind.CONSUMER
    attributes = dict(span.attributes or {})
    worker_id = attributes.pop("aio_async.worker.id")
    assert isinstance(worker_id, str)
    assert worker_id
    assert attributes == {
        "messaging.system": "aio_async",
        "messaging.operation.type": "process",
        "messaging.destination.name": "default",
        "aio_async.job.id": job.pk,
        "aio_async.job.name": function.name,
        "aio_async.job.queue": "default",
        "aio_async.job.attempt": 1,
        "aio_async.job.outcome": "succeeded",
    }
    assert span.status.status_code is StatusCode.UNSET
    assert span.start_time is not None
    assert span.end_time is not None
    assert inside.start_time is not None
    assert span.start_time <= inside.start_time


def test_a_failed_attempts_span_has_status_error_and_the_exception_recorded() -> None:
    with TRACER.start_as_current_span("request") as request:
        job = schedule(tasks.write_then_fail, ["b"], max_attempts=2)
    assert drain(backoff=Backoff(base=0, jitter=0)) == {Outcome.RETRYING: 1, Outcome.FAILED: 1}
    attempts = [span for span in EXPORTER.get_finished_spans() if span.name.startswith("aio_async.job ")]
    assert [dict(span.attributes or {}).get("aio_async.job.outcome") for span in attempts] == [
        "retrying",
        "failed",
    ]
    for number, span in enumerate(attempts, start=1):
        assert span.attributes is not None
        assert span.attributes["aio_async.job.attempt"] == number
        assert span.attributes["aio_async.job.id"] == job.pk
        assert span.context is not None
        assert span.context.trace_id == request.get_span_context().trace_id  # both attempts
        assert span.status.status_code is StatusCode.ERROR
        assert span.status.description == "ValueError: failing after writing b"
        (event,) = span.events
        assert event.name == "exception"
        assert event.attributes is not None
        assert event.attributes["exception.type"] == "ValueError"
        assert event.attributes["exception.message"] == "failing after writing b"
        assert "Traceback (most recent call last)" in str(event.attributes["exception.stacktrace"])


def test_a_job_scheduled_outside_a_trace_starts_one_of_its_own() -> None:
    with TRACER.start_as_current_span("unrelated"):
        pass
    job = schedule(tasks.add, [1, 2])
    assert Job.objects.get(pk=job.pk).meta == {}
    with TRACER.start_as_current_span("around the worker") as around:
        assert drain() == {Outcome.SUCCEEDED: 1}
    span = spans()["aio_async.job tests.app.tasks.add"]
    assert span.parent is None
    assert span.context is not None
    assert span.context.trace_id != around.get_span_context().trace_id


def test_nothing_is_traced_or_stored_once_uninstrumented() -> None:
    otel.uninstrument()
    assert not otel.is_instrumented()
    with TRACER.start_as_current_span("request"):
        job = schedule(tasks.add, [1, 2])
    assert Job.objects.get(pk=job.pk).meta == {}
    assert drain() == {Outcome.SUCCEEDED: 1}
    assert [span.name for span in EXPORTER.get_finished_spans()] == ["request"]
    assert trace.get_current_span() is trace.INVALID_SPAN


async def test_aschedule_carries_the_async_callers_trace_and_an_interrupted_attempts_span_ends() -> None:
    async with beside(shutdown_timeout=0.1) as executor:
        with TRACER.start_as_current_span("asgi request") as request:
            job = await aio_async.aschedule(tasks.await_cancel, ["x"])
        await until(lambda: Record.objects.filter(key="x").exists())
    assert dict(executor.outcomes) == {Outcome.RELEASED: 1}
    span = spans()["aio_async.job tests.app.tasks.await_cancel"]
    assert span.parent is not None
    assert span.parent.span_id == request.get_span_context().span_id
    assert span.attributes is not None
    assert (span.attributes["aio_async.job.id"], span.attributes["aio_async.job.outcome"]) == (
        job.pk,
        "released",
    )
    assert span.status.status_code is StatusCode.UNSET


def test_the_opentelemetry_setting_instruments_every_process_at_start() -> None:
    from django.conf import settings
    from django.test import override_settings

    from aio_async import apps

    otel.uninstrument()
    with override_settings(AIO_ASYNC={**getattr(settings, "AIO_ASYNC", {}), "OPENTELEMETRY": True}):
        apps._instrument()  # what AppConfig.ready() does
    try:
        assert otel.is_instrumented()
    finally:
        otel.uninstrument()
    apps._instrument()  # the setting off: nothing
    assert not otel.is_instrumented()

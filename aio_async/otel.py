"""OpenTelemetry tracing of jobs (``pip install 'aio_async[otel]'``), turned on by ``instrument()``.

    import aio_async.otel

    aio_async.otel.instrument()  # in every process that schedules or runs jobs

At schedule time the current trace context (W3C ``traceparent``, and baggage, through the
global propagator) is stored in the job's ``meta`` under ``"_otel"``, when there is one. At
run time the worker opens a span ``aio_async.job <name>`` (kind CONSUMER) whose parent is that
context, or a new trace when the job carries none; it is the current span while the job's
function runs, on the event loop for a coroutine job and in the job thread for a sync job
(asgiref copies the context there), so the spans the job makes are its children. It carries
the job's id, name, queue and attempt, and the worker's id; it ends once the attempt's end is
recorded, with the outcome, and for a failed attempt (retrying or failed for good) status
ERROR and the exception recorded as an ``exception`` event. A job refused before it started
has no span.

Reading the stored context costs the worker one query per attempt (only once this module
is instrumented): the claim does not return a job's ``meta``.
"""

from __future__ import annotations

import time
from typing import Any

from asgiref.sync import sync_to_async

from aio_async import signals
from aio_async.conf import get_settings
from aio_async.models import Job
from aio_async.values import Attempt, ErrorInfo, Outcome

try:
    from opentelemetry import context as otel_context
    from opentelemetry import propagate, trace
    from opentelemetry.trace import SpanKind, StatusCode
except ImportError as exc:  # pragma: no cover - the message is the point
    raise ImportError(
        "aio_async.otel needs OpenTelemetry: pip install 'aio_async[otel]' "
        "(opentelemetry-api and opentelemetry-sdk)"
    ) from exc

__all__ = ["OTEL_KEY", "instrument", "is_instrumented", "uninstrument"]

#: The key of the trace context in a job's ``meta`` (keys that start with ``_`` are aio_async's).
OTEL_KEY = "_otel"
_SCOPE = "aio_async"

#: The outcomes whose span has status ERROR (a failed attempt, retried or not).
_FAILED = (Outcome.RETRYING, Outcome.FAILED)


def _inject(sender: Any, job: Job, **kwargs: Any) -> None:
    """``job_scheduling`` receiver: store the current trace context in the job's meta."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    if carrier:
        job.meta[OTEL_KEY] = carrier


def _carrier(job_id: int) -> dict[str, str]:
    """The trace context stored with the job ({} when there is none)."""
    meta = Job.objects.using(get_settings().database).filter(pk=job_id).values_list("meta", flat=True).first()
    found = meta.get(OTEL_KEY) if isinstance(meta, dict) else None
    if not isinstance(found, dict):
        return {}
    return {str(key): str(value) for key, value in found.items()}


_read_carrier = sync_to_async(_carrier, thread_sensitive=True)


class _Tracing:
    """The worker's observer: one span per attempt, current while the job's function runs."""

    def __init__(self, tracer: trace.Tracer) -> None:
        self.tracer = tracer

    async def started(self, attempt: Attempt, worker_id: str) -> trace.Span:
        """Open the attempt's span, child of the scheduler's context, and make it current."""
        began = time.time_ns()
        carrier = await _read_carrier(attempt.job_id)
        # A job without a stored context starts a trace of its own, whatever the worker runs in.
        parent = propagate.extract(carrier, context=otel_context.Context())
        span = self.tracer.start_span(
            f"aio_async.job {attempt.name}",
            context=parent,
            kind=SpanKind.CONSUMER,
            start_time=began,
            attributes={
                "messaging.system": "aio_async",
                "messaging.operation.type": "process",
                "messaging.destination.name": attempt.queue,
                "aio_async.job.id": attempt.job_id,
                "aio_async.job.name": attempt.name,
                "aio_async.job.queue": attempt.queue,
                "aio_async.job.attempt": attempt.number,
                "aio_async.worker.id": worker_id,
            },
        )
        # Attached in the attempt's own task, never detached: that context ends with the task.
        otel_context.attach(trace.set_span_in_context(span, parent))
        return span

    def ended(
        self,
        state: Any,
        attempt: Attempt,
        worker_id: str,
        outcome: Outcome,
        duration: float,
        error: ErrorInfo | None,
    ) -> None:
        """End the attempt's span with its outcome; ERROR and the exception for a failure."""
        if not isinstance(state, trace.Span):
            return  # refused before it started: no span
        state.set_attribute("aio_async.job.outcome", outcome.value)
        if error is not None:
            state.add_event(
                "exception",
                {
                    "exception.type": error.exception,
                    "exception.message": error.message,
                    "exception.stacktrace": error.traceback,
                },
            )
        if outcome in _FAILED:
            detail = f"{error.exception}: {error.message}" if error is not None else outcome.value
            state.set_status(StatusCode.ERROR, detail[:1000])
        elif outcome is Outcome.LEASE_LOST:
            state.set_status(StatusCode.ERROR, "its lease was taken over: nothing it wrote was committed")
        state.end()


_tracing: _Tracing | None = None


def instrument(tracer_provider: trace.TracerProvider | None = None) -> None:
    """Trace jobs from now on in this process: store contexts at schedule, open spans at run."""
    global _tracing  # one per process, as OpenTelemetry's own instrumentors
    uninstrument()
    _tracing = _Tracing(trace.get_tracer(_SCOPE, tracer_provider=tracer_provider))
    signals.job_scheduling.connect(_inject, sender=Job, dispatch_uid="aio_async.otel")
    signals.observe(_tracing)


def uninstrument() -> None:
    """Stop tracing jobs in this process."""
    global _tracing
    signals.job_scheduling.disconnect(sender=Job, dispatch_uid="aio_async.otel")
    if _tracing is not None:
        signals.unobserve(_tracing)
        _tracing = None


def is_instrumented() -> bool:
    """True while ``instrument()`` is in effect."""
    return _tracing is not None

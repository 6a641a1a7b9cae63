"""aio_async.testing's run_jobs() and drain() run jobs as the worker does: limits, signals, ends."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.dispatch import Signal

from aio_async import schedule, schedule_many, signals, testing
from aio_async.models import Error, Job, Status
from tests.app import tasks
from tests.app.models import Record

LIFECYCLE = ("job_started", "job_succeeded", "job_retrying", "job_failed", "job_snoozed")


@pytest.fixture
def sent() -> Iterator[list[tuple[str, int]]]:
    """The worker's lifecycle signals sent during the test: (name, job id)."""
    found: list[tuple[str, int]] = []
    receivers = []
    for name in LIFECYCLE:
        signal: Signal = getattr(signals, name)

        def receiver(sender: Any, _name: str = name, **kwargs: Any) -> None:
            found.append((_name, kwargs["job_id"]))

        signal.connect(receiver, sender=Job, weak=False)
        receivers.append((signal, receiver))
    yield found
    for signal, receiver in receivers:
        signal.disconnect(receiver, sender=Job)


@pytest.mark.django_db
def test_run_jobs_runs_jobs_with_a_concurrency_key_a_limit_and_a_rate() -> None:
    keyed = schedule(tasks.write, ["keyed"], concurrency_key="k", concurrency_limit=1)
    schedule_many(tasks.limited, [([n], {}) for n in range(3)])
    rated = schedule(tasks.write, ["rated"], rate="5/s")
    assert testing.run_jobs() == {"succeeded": 5}
    assert set(Job.objects.values_list("status", flat=True)) == {Status.SUCCEEDED}
    assert list(
        Job.objects.filter(name="tests.app.tasks.limited").order_by("pk").values_list("result", flat=True)
    ) == [
        0,
        1,
        2,
    ]
    assert Record.objects.filter(key__in=["keyed", "rated"]).count() == 2
    assert {keyed.pk, rated.pk} <= set(
        Job.objects.filter(status=Status.SUCCEEDED).values_list("pk", flat=True)
    )


@pytest.mark.django_db
def test_drain_runs_a_coroutine_job_with_limits_in_the_tests_transaction() -> None:
    job = schedule(tasks.sync_customer, ["ada", 0.0])
    assert testing.drain() == {"succeeded": 1}
    job.refresh_from_db()
    assert (job.status, job.result) == (Status.SUCCEEDED, "ada")


@pytest.mark.django_db
def test_the_helpers_send_the_workers_signals(sent: list[tuple[str, int]]) -> None:
    ok = schedule(tasks.limited, [1])
    failing = schedule(tasks.write_then_fail, ["x"], max_attempts=1)
    assert testing.drain() == {"succeeded": 1, "failed": 1}
    assert [name for name, job_id in sent if job_id == ok.pk] == ["job_started", "job_succeeded"]
    assert [name for name, job_id in sent if job_id == failing.pk] == ["job_started", "job_failed"]
    assert Error.objects.filter(job=failing, exception="ValueError").count() == 1


@pytest.mark.django_db
def test_a_failed_jobs_work_rolls_back_and_its_end_is_recorded_as_the_worker_records_it() -> None:
    job = schedule(tasks.write_then_fail, ["rolled back"], max_attempts=2)
    assert testing.run_jobs() == {"retrying": 1}
    job.refresh_from_db()
    assert (job.status, job.attempts) == (Status.QUEUED, 1)
    assert not Record.objects.filter(key="rolled back").exists()
    assert testing.drain(with_scheduled=True) == {"failed": 1}
    job.refresh_from_db()
    assert job.status == Status.FAILED

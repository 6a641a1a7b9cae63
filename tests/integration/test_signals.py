"""Signals of a job's life, sent by schedule(), cancel() and a real worker on a real database."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.db import transaction
from django.dispatch import Signal

from aio_async import acancel, cancel, schedule, schedule_many, signals
from aio_async.conf import Backoff
from aio_async.executor import Executor
from aio_async.models import Job, Status
from aio_async.values import ErrorInfo, Outcome
from tests.app import tasks
from tests.app.models import Record
from tests.conftest import beside, drain, until

pytestmark = pytest.mark.django_db(transaction=True)

ALL = {
    name: getattr(signals, name)
    for name in (
        "job_scheduled",
        "job_cancelled",
        "job_started",
        "job_succeeded",
        "job_retrying",
        "job_failed",
        "job_snoozed",
        "job_stopped",
    )
}


class Sent(list[tuple[str, dict[str, Any]]]):
    """What the signals sent, in order: (signal name, arguments but ``signal``)."""

    def names(self, job_id: int | None = None) -> list[str]:
        """The signals sent, for one job or all."""
        return [name for name, kwargs in self if job_id is None or kwargs["job_id"] == job_id]

    def of(self, name: str) -> list[dict[str, Any]]:
        """The arguments of each sending of ``name``."""
        return [kwargs for sent, kwargs in self if sent == name]


@pytest.fixture
def sent() -> Iterator[Sent]:
    """Every lifecycle signal, recorded by a plain (sync) receiver."""
    found = Sent()
    receivers = []
    for label, signal in ALL.items():

        def receiver(sender: Any, signal: Signal, _label: str = label, **kwargs: Any) -> None:
            assert sender is Job
            found.append((_label, kwargs))

        signal.connect(receiver, sender=Job, weak=False)
        receivers.append((signal, receiver))
    yield found
    for signal, receiver in receivers:
        signal.disconnect(receiver, sender=Job)


# schedule() and cancel() --------------------------------------------------------------------


def test_job_scheduled_is_sent_once_per_job_with_what_it_is(sent: Sent) -> None:
    job = schedule(tasks.write, ["a"], queue="mail")
    assert sent.names() == ["job_scheduled"]
    (kwargs,) = sent.of("job_scheduled")
    assert kwargs == {
        "job": job,
        "job_id": job.pk,
        "name": "tests.app.tasks.write",
        "queue": "mail",
        "using": "default",
    }
    many = schedule_many(tasks.add, [((1, 2), {}), ((3, 4), {})])
    assert [kwargs["job_id"] for kwargs in sent.of("job_scheduled")] == [job.pk, *(j.pk for j in many)]


def test_job_scheduled_waits_for_the_commit_and_a_rollback_sends_nothing(sent: Sent) -> None:
    with transaction.atomic():
        kept = schedule(tasks.write, ["kept"])
        assert sent.names() == []  # not yet: the job does not exist for anyone else
    assert [kwargs["job_id"] for kwargs in sent.of("job_scheduled")] == [kept.pk]
    with contextlib.suppress(RuntimeError), transaction.atomic():
        schedule(tasks.write, ["gone"])
        schedule_many(tasks.add, [((1, 2), {})])
        raise RuntimeError("roll back")
    assert [kwargs["job_id"] for kwargs in sent.of("job_scheduled")] == [kept.pk]
    assert Job.objects.count() == 1


def test_a_unique_job_that_was_not_written_is_not_sent(sent: Sent) -> None:
    first = schedule(tasks.write, ["u"], unique=True)
    again = schedule(tasks.write, ["u"], unique=True)
    assert again.pk == first.pk
    assert [kwargs["job_id"] for kwargs in sent.of("job_scheduled")] == [first.pk]


def test_job_scheduling_receivers_may_add_to_the_meta_before_the_insert() -> None:
    def stamp(sender: Any, job: Job, **kwargs: Any) -> None:
        assert job.pk is None
        job.meta["request_id"] = "r-1"

    signals.job_scheduling.connect(stamp, sender=Job)
    try:
        job = schedule(tasks.write, ["m"], meta={"mine": 1})
        (other,) = schedule_many(tasks.add, [((1, 2), {})])
    finally:
        signals.job_scheduling.disconnect(stamp, sender=Job)
    assert Job.objects.get(pk=job.pk).meta == {"mine": 1, "request_id": "r-1"}
    assert Job.objects.get(pk=other.pk).meta == {"request_id": "r-1"}
    assert Job.objects.get(pk=schedule(tasks.write, ["n"]).pk).meta == {}


def test_job_cancelled_is_sent_once_per_job_cancelled_on_commit(sent: Sent) -> None:
    one = schedule(tasks.write, ["a"], queue="mail")
    two = schedule(tasks.add, [1, 2])
    sent.clear()
    with transaction.atomic():
        assert cancel([one, two, one], by="bob") == 2
        assert sent.names() == []
    assert sorted(sent.of("job_cancelled"), key=lambda kwargs: kwargs["job_id"]) == [
        {"job_id": one.pk, "name": "tests.app.tasks.write", "queue": "mail", "by": "bob", "using": "default"},
        {
            "job_id": two.pk,
            "name": "tests.app.tasks.add",
            "queue": "default",
            "by": "bob",
            "using": "default",
        },
    ]
    sent.clear()
    assert cancel(one) == 0  # finished already: nothing cancelled, nothing sent
    assert sent == []


def test_a_cancel_that_rolls_back_sends_nothing(sent: Sent) -> None:
    job = schedule(tasks.write, ["a"])
    sent.clear()
    with contextlib.suppress(RuntimeError), transaction.atomic():
        cancel(job)
        raise RuntimeError("roll back")
    assert sent == []
    assert Job.objects.get(pk=job.pk).status == Status.QUEUED


# The worker -----------------------------------------------------------------------------------


def test_a_sync_job_sends_started_then_succeeded(sent: Sent) -> None:
    job = schedule(tasks.write, ["a"], {"value": 3})
    assert drain() == {Outcome.SUCCEEDED: 1}
    assert sent.names(job.pk) == ["job_scheduled", "job_started", "job_succeeded"]
    (started,) = sent.of("job_started")
    worker_id = started.pop("worker_id")
    assert worker_id
    assert started == {"job_id": job.pk, "name": "tests.app.tasks.write", "queue": "default", "attempt": 1}
    (succeeded,) = sent.of("job_succeeded")
    assert succeeded["duration"] > 0
    assert {key: succeeded[key] for key in ("job_id", "attempt", "worker_id", "outcome", "error")} == {
        "job_id": job.pk,
        "attempt": 1,
        "worker_id": worker_id,
        "outcome": Outcome.SUCCEEDED,
        "error": None,
    }


def test_a_failing_job_sends_retrying_then_failed_with_its_error(sent: Sent) -> None:
    job = schedule(tasks.write_then_fail, ["b"], max_attempts=2)
    assert drain(backoff=Backoff(base=0, jitter=0)) == {Outcome.RETRYING: 1, Outcome.FAILED: 1}
    assert sent.names(job.pk) == ["job_scheduled", "job_started", "job_retrying", "job_started", "job_failed"]
    assert [kwargs["attempt"] for kwargs in sent.of("job_started")] == [1, 2]
    (retrying,) = sent.of("job_retrying")
    (failed,) = sent.of("job_failed")
    assert (retrying["outcome"], retrying["attempt"]) == (Outcome.RETRYING, 1)
    assert (failed["outcome"], failed["attempt"]) == (Outcome.FAILED, 2)
    for kwargs in (retrying, failed):
        assert isinstance(kwargs["error"], ErrorInfo)
        assert (kwargs["error"].exception, kwargs["error"].message) == (
            "ValueError",
            "failing after writing b",
        )


def test_coroutine_jobs_send_the_same_signals(sent: Sent) -> None:
    good = schedule(tasks.awrite, ["async"])
    bad = schedule(tasks.afail, ["boom"], max_attempts=1)
    assert drain() == {Outcome.SUCCEEDED: 1, Outcome.FAILED: 1}
    assert sent.names(good.pk) == ["job_scheduled", "job_started", "job_succeeded"]
    assert sent.names(bad.pk) == ["job_scheduled", "job_started", "job_failed"]
    assert sent.of("job_failed")[0]["error"].message == "boom"


def test_a_snoozed_job_sends_snoozed_then_runs_again(sent: Sent) -> None:
    job = schedule(tasks.asnooze, [1])
    assert drain() == {Outcome.SNOOZED: 1, Outcome.SUCCEEDED: 1}
    assert sent.names(job.pk) == [
        "job_scheduled",
        "job_started",
        "job_snoozed",
        "job_started",
        "job_succeeded",
    ]
    assert sent.of("job_snoozed")[0]["outcome"] is Outcome.SNOOZED


def test_a_refused_job_fails_without_starting(sent: Sent) -> None:
    job = schedule(tasks.write, ["a"], max_attempts=1)
    Job.objects.filter(pk=job.pk).update(name="os.system")  # rows can be written by anyone
    assert drain() == {Outcome.FAILED: 1}
    assert sent.names(job.pk) == ["job_scheduled", "job_failed"]
    assert sent.of("job_failed")[0]["error"].exception == "aio_async.errors.JobRefused"


def test_a_receiver_that_raises_is_logged_and_the_job_and_worker_carry_on(
    sent: Sent, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(sender: Any, **kwargs: Any) -> None:
        raise RuntimeError("a broken receiver")

    async def abroken(sender: Any, **kwargs: Any) -> None:
        raise RuntimeError("a broken async receiver")

    connected = [(signal, receiver) for signal in ALL.values() for receiver in (broken, abroken)]
    connected.append((signals.job_scheduling, broken))
    for signal, receiver in connected:
        signal.connect(receiver, sender=Job)
    try:
        with caplog.at_level(logging.ERROR, logger="django.dispatch"):
            job = schedule(tasks.write, ["a"])
            after = schedule(tasks.write, ["b"])
            assert drain() == {Outcome.SUCCEEDED: 2}
            assert cancel(schedule(tasks.write, ["c"])) == 1
    finally:
        for signal, receiver in connected:
            signal.disconnect(receiver, sender=Job)
    assert Job.objects.get(pk=job.pk).status == Job.objects.get(pk=after.pk).status == Status.SUCCEEDED
    assert sorted(Record.objects.values_list("key", flat=True)) == ["a", "b"]
    messages = [record.getMessage() for record in caplog.records]
    # Every sending: 3 job_scheduling (plain receivers only), 3 job_scheduled, 2 job_started,
    # 2 job_succeeded and 1 job_cancelled.
    assert sum("a broken receiver" in message for message in messages) == 11
    assert sum("a broken async receiver" in message for message in messages) == 8
    assert sent.names(job.pk) == ["job_scheduled", "job_started", "job_succeeded"]


def test_async_receivers_run_on_the_workers_loop_and_plain_ones_may_use_the_orm() -> None:
    seen: list[tuple[str, object]] = []

    async def on_loop(sender: Any, job_id: int, **kwargs: Any) -> None:
        asyncio.get_running_loop()  # raises outside a loop
        seen.append(("async", job_id))

    def with_orm(sender: Any, job_id: int, **kwargs: Any) -> None:
        seen.append(("sync", Job.objects.get(pk=job_id).status))

    signals.job_started.connect(on_loop, sender=Job)
    signals.job_started.connect(with_orm, sender=Job)
    try:
        job = schedule(tasks.write, ["a"])
        assert drain() == {Outcome.SUCCEEDED: 1}
    finally:
        signals.job_started.disconnect(on_loop, sender=Job)
        signals.job_started.disconnect(with_orm, sender=Job)
    assert sorted(seen, key=str) == [("async", job.pk), ("sync", Status.RUNNING)]


def worker() -> contextlib.AbstractAsyncContextManager[Executor]:
    """A worker beside the test, told of cancellations by NOTIFY or by its once-a-second look."""
    return beside(poll_interval=0.05, lease_seconds=30.0)


async def test_a_job_cancelled_while_it_runs_sends_cancelled_once_and_its_worker_stopped(sent: Sent) -> None:
    async with worker() as executor:
        job = await sync_to_async(schedule)(tasks.await_cancel, ["a"])
        await until(lambda: "job_started" in sent.names())
        assert await acancel(job, by="bob") == 1
        await until(lambda: executor.outcomes[Outcome.CANCELLED] == 1)
        await until(lambda: "job_stopped" in sent.names())
    assert sent.names(job.pk) == ["job_scheduled", "job_started", "job_cancelled", "job_stopped"]
    assert sent.of("job_cancelled")[0]["by"] == "bob"
    (stopped,) = sent.of("job_stopped")
    assert (stopped["outcome"], stopped["error"]) == (Outcome.CANCELLED, None)

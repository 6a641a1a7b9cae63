"""Awaitable results: result() and aresult(), woken by NOTIFY on PostgreSQL, polling elsewhere."""

from __future__ import annotations

import datetime
import time
from collections.abc import AsyncIterator

import pytest
from asgiref.sync import sync_to_async
from django.db import connection, transaction
from django.utils import timezone

from aio_async import InvalidOption, JobFailed, ResultTimeout, aresult, deschedule, result, schedule
from aio_async.executor import Executor
from aio_async.models import Job, Status
from tests.app import tasks
from tests.conftest import beside, drain

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_finished_job_answers_at_once() -> None:
    job = schedule(tasks.add, [2, 3])
    drain()
    assert result(job) == 5
    assert result(job.pk, timeout=1) == 5


def test_a_failed_job_raises_its_last_error() -> None:
    job = schedule(tasks.write_then_fail, ["x"], max_attempts=1)
    drain()
    with pytest.raises(JobFailed) as failed:
        result(job)
    assert (failed.value.job_id, failed.value.status) == (job.pk, "failed")
    assert failed.value.exception == "ValueError"
    assert "Traceback" in failed.value.error_traceback
    assert str(failed.value).startswith(f"job {job.pk} failed (ValueError: ")


def test_a_cancelled_job_raises_too() -> None:
    job = schedule(tasks.add, [1, 1])
    deschedule(tasks.add, [1, 1])
    with pytest.raises(JobFailed, match=f"job {job.pk} cancelled") as cancelled:
        result(job)
    assert cancelled.value.status == "cancelled"


def test_a_wait_that_times_out_leaves_the_job_alone() -> None:
    job = schedule(tasks.add, [1, 1], run_after=datetime.timedelta(hours=1))
    started = time.monotonic()
    with pytest.raises(ResultTimeout, match=f"job {job.pk} did not finish within 0.3 s"):
        result(job, timeout=0.3)
    assert 0.3 <= time.monotonic() - started < 5
    job.refresh_from_db()
    assert job.status == Status.QUEUED
    assert isinstance(ResultTimeout("x"), TimeoutError)


@pytest.mark.parametrize("bad", ["7", None, 1.5, True])
def test_result_takes_a_job_or_its_id(bad: object) -> None:
    with pytest.raises(InvalidOption, match="result\\(\\) takes a Job or a job id"):
        result(bad)


def test_a_job_that_does_not_exist_is_said_so() -> None:
    with pytest.raises(InvalidOption, match="job 987654 does not exist"):
        result(987654, timeout=1)


def test_waiting_inside_a_transaction_is_refused() -> None:
    with transaction.atomic():
        job = schedule(tasks.add, [1, 1])
        with pytest.raises(InvalidOption, match=r"inside transaction\.atomic"):
            result(job, timeout=1)


@pytest.fixture
async def worker() -> AsyncIterator[Executor]:
    """A worker that polls often (without LISTEN, polling is how it finds jobs)."""
    async with beside(poll_interval=0.05) as executor:
        yield executor


@pytest.fixture
async def listening_worker() -> AsyncIterator[Executor]:
    """A worker that polls once a minute: on PostgreSQL with psycopg 3, NOTIFY wakes it."""
    async with beside(poll_interval=60.0) as executor:
        yield executor


async def test_a_waiter_gets_the_result_of_a_job_that_runs_meanwhile(worker: Executor) -> None:
    job = await sync_to_async(schedule)(tasks.asleep, [0.3])
    assert await aresult(job, timeout=30) == 0.3


@pytest.mark.postgres_only
@pytest.mark.psycopg3
async def test_on_postgresql_the_waiter_wakes_on_the_commit_not_on_a_poll(listening_worker: Executor) -> None:
    job = await sync_to_async(schedule)(tasks.asleep, [0.5])
    assert await aresult(job, timeout=30) == 0.5
    returned = timezone.now()
    finished = (await Job.objects.aget(pk=job.pk)).finished
    assert finished is not None
    assert returned - finished < datetime.timedelta(milliseconds=200)
    assert not (await Job.objects.aget(pk=job.pk)).awaited  # the job's row is not written by a waiter
    assert await sync_to_async(waiting_on)(job.pk) == 0  # the wait's own row is gone


def waiting_on(job_id: int) -> int:
    """How many waits are recorded for the job."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM aio_async_waiter WHERE job_id = %s", [job_id])
        return int(cursor.fetchone()[0])

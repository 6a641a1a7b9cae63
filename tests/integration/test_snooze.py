"""Snooze: a job asks to run again later, without using up an attempt, on both databases."""

from __future__ import annotations

import datetime
from collections.abc import AsyncIterator

import pytest
from asgiref.sync import sync_to_async
from django.utils import timezone

from aio_async import Snooze, schedule
from aio_async.models import Error, Job, Status
from aio_async.store.database import DatabaseStore
from aio_async.values import Outcome
from tests.app import tasks
from tests.app.models import Record
from tests.conftest import drain
from tests.integration.test_store import CONNECTORS, make_store

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_job_with_one_attempt_may_snooze_three_times_then_succeed() -> None:
    job = schedule(tasks.snooze_then_write, ["s", 3], max_attempts=1)
    outcomes = drain()
    assert outcomes == {Outcome.SNOOZED: 3, Outcome.SUCCEEDED: 1}
    job.refresh_from_db()
    assert (job.status, job.attempts, job.excused, job.result) == (Status.SUCCEEDED, 4, 3, 4)
    assert job.meta == {"snoozed": 3}
    assert list(Record.objects.values_list("key", flat=True)) == ["s-4"]  # snoozed attempts rolled back
    assert not Error.objects.exists()


def test_a_coroutine_job_snoozes_too() -> None:
    job = schedule(tasks.asnooze, [2], max_attempts=1, meta={"kept": True})
    assert drain() == {Outcome.SNOOZED: 2, Outcome.SUCCEEDED: 1}
    job.refresh_from_db()
    assert (job.status, job.result, job.meta) == (Status.SUCCEEDED, 3, {"kept": True, "snoozed": 2})


def test_a_snooze_puts_the_job_back_for_later() -> None:
    job = schedule(tasks.snooze_then_write, ["later", 1, 60], max_attempts=1)
    assert drain() == {Outcome.SNOOZED: 1}
    job.refresh_from_db()
    assert (job.status, job.locked_by, job.excused) == (Status.QUEUED, "", 1)
    assert timezone.now() + datetime.timedelta(seconds=50) < job.run_after
    assert job.run_after < timezone.now() + datetime.timedelta(seconds=61)


@pytest.mark.parametrize("seconds", [-1, "soon", True, float("nan")])
def test_a_snooze_needs_a_number_of_seconds(seconds: object) -> None:
    with pytest.raises(ValueError, match="Snooze takes a number of seconds from 0"):
        Snooze(seconds)  # type: ignore[arg-type]


@pytest.fixture(params=CONNECTORS)
async def store(request: pytest.FixtureRequest) -> AsyncIterator[DatabaseStore]:
    made = make_store(request.param)
    yield made
    await made.close()


async def test_a_snooze_is_fenced(store: DatabaseStore) -> None:
    job = await sync_to_async(schedule)(tasks.add, [1, 1])
    [attempt] = await store.claim(1, alone=True)
    assert await store.snooze(attempt, 0) == Outcome.SNOOZED
    assert await store.snooze(attempt, 0) == Outcome.LEASE_LOST  # the attempt no longer holds it
    stored = await Job.objects.aget(pk=job.pk)
    assert (stored.status, stored.excused, stored.meta) == (Status.QUEUED, 1, {"snoozed": 1})

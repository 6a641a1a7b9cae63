"""Durable steps beside the queue's other rules, on both databases.

A suspended unique job keeps its key where a running one would; a suspended job holds no slot
of its concurrency limit; a cancelled one stays cancelled when its sleep ends.
"""

from __future__ import annotations

import datetime
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse
from django.utils import timezone

import aio_async
from aio_async import schedule
from aio_async.api import cancel_pending
from aio_async.models import Error, Job, Status, Step
from aio_async.values import Outcome
from tests.app import step_tasks
from tests.app.models import Record
from tests.conftest import drain

pytestmark = pytest.mark.django_db(transaction=True)

#: Schedule options of a unique job that holds its key while it runs (and so while suspended).
HELD_RUNNING: dict[str, Any] = {"unique": True, "unique_states": ["queued", "running"]}


@pytest.fixture
def client() -> Client:
    user = User.objects.create_superuser("admin", "admin@example.com", "pw")
    client = Client()
    client.force_login(user)
    return client


def page_of(client: Client, job: Job) -> str:
    response = client.get(reverse("admin:aio_async_job_change", args=[job.pk]))
    assert response.status_code == 200
    return response.content.decode()


def step_rows(page: str) -> list[list[str]]:
    """The cells of the job page's steps table, row by row."""
    table = page[page.index('<table class="step-journal">') :]
    table = table[: table.index("</table>")]
    return [[cell.split("</td>")[0] for cell in row.split("<td>")[1:]] for row in table.split("<tr>")[2:]]


def moment(value: datetime.datetime | None) -> str:
    """A moment as the job page writes it (to the second)."""
    assert value is not None
    return timezone.localtime(value).strftime("%Y-%m-%d %H:%M:%S")


def wake(job: Job) -> None:
    """End a job's durable sleep now (as if its time had come)."""
    now = timezone.now()
    Step.objects.filter(job=job, kind="sleep").update(until=now)
    Job.objects.filter(pk=job.pk, status=Status.SUSPENDED).update(run_after=now)


# Cancel, unique keys and limits ------------------------------------------------------------


def test_a_cancelled_sleeper_stays_cancelled_when_its_sleep_ends() -> None:
    job = schedule(step_tasks.sleep_between, ["cs", 3600])
    assert drain() == {Outcome.SUSPENDED: 1}
    assert aio_async.cancel(job) == 1
    wake(job)
    Step.objects.filter(job=job).update(until=timezone.now())
    assert drain() == {}
    job.refresh_from_db()
    assert job.status == Status.CANCELLED
    assert sorted(Record.objects.values_list("key", flat=True)) == ["cs-before"]  # "after" never ran


def test_cancel_of_a_queryset_takes_suspended_jobs_and_deschedule_leaves_them() -> None:
    sleeper = schedule(step_tasks.sleep_between, ["q", 3600])
    assert drain() == {Outcome.SUSPENDED: 1}
    assert aio_async.deschedule(step_tasks.sleep_between, ["q", 3600]) == 0  # it has started
    assert cancel_pending(Job.objects.all()) == 0
    assert Job.objects.get(pk=sleeper.pk).status == Status.SUSPENDED
    assert aio_async.cancel(Job.objects.filter(pk=sleeper.pk), by="a test") == 1
    assert Job.objects.get(pk=sleeper.pk).status == Status.CANCELLED
    assert "while it was suspended" in Error.objects.get(job=sleeper).message


def test_a_unique_job_keeps_its_key_while_it_sleeps() -> None:
    first = schedule(step_tasks.sleep_between, ["u", 3600], **HELD_RUNNING)
    assert drain() == {Outcome.SUSPENDED: 1}
    first.refresh_from_db()
    assert (first.status, first.unique_key is not None) == (Status.SUSPENDED, True)
    again = schedule(step_tasks.sleep_between, ["u", 3600], **HELD_RUNNING)
    assert (again.pk, again.unique_conflict) == (first.pk, True)
    replaced = schedule(step_tasks.sleep_between, ["u", 3600], **HELD_RUNNING, on_conflict="replace")
    assert replaced.pk == first.pk
    assert Job.objects.count() == 1
    wake(first)
    assert drain() == {Outcome.SUCCEEDED: 1}
    first.refresh_from_db()
    assert first.unique_key is None  # succeeded does not count: the call may be made again
    assert schedule(step_tasks.sleep_between, ["u", 3600], **HELD_RUNNING).pk != first.pk


def test_a_unique_job_keeps_its_key_while_it_waits_and_its_cancel_frees_it() -> None:
    first = schedule(step_tasks.wait_between, ["uw", "unique-1", None], **HELD_RUNNING)
    assert drain() == {Outcome.SUSPENDED: 1}
    assert schedule(step_tasks.wait_between, ["uw", "unique-1", None], **HELD_RUNNING).pk == first.pk
    assert aio_async.cancel(first) == 1
    second = schedule(step_tasks.wait_between, ["uw", "unique-1", None], **HELD_RUNNING)
    assert (second.pk != first.pk, second.unique_conflict) == (True, False)


def test_a_unique_job_whose_running_does_not_count_gave_its_key_up_when_it_started() -> None:
    first = schedule(step_tasks.sleep_between, ["d", 3600], unique=True)  # held while queued only
    assert drain() == {Outcome.SUSPENDED: 1}
    first.refresh_from_db()
    assert first.unique_key is None
    second = schedule(step_tasks.sleep_between, ["d", 3600], unique=True)
    assert (second.pk != first.pk, second.unique_conflict) == (True, False)


def test_a_suspended_job_holds_no_slot_of_its_concurrency_limit() -> None:
    limit: dict[str, Any] = {"concurrency_key": "api", "concurrency_limit": 1}
    sleeper = schedule(step_tasks.sleep_between, ["a", 3600], **limit)
    assert drain() == {Outcome.SUSPENDED: 1}
    other = schedule(step_tasks.three_steps, ["b"], **limit)
    assert drain() == {Outcome.SUCCEEDED: 1}  # ran while the first slept
    other.refresh_from_db()
    sleeper.refresh_from_db()
    assert (other.status, sleeper.status) == (Status.SUCCEEDED, Status.SUSPENDED)
    wake(sleeper)
    assert drain() == {Outcome.SUCCEEDED: 1}
    sleeper.refresh_from_db()
    assert (sleeper.status, sleeper.limit_key) == (Status.SUCCEEDED, "api")


def test_a_waiting_job_holds_no_slot_of_its_concurrency_limit() -> None:
    limit: dict[str, Any] = {"concurrency_key": "erp", "concurrency_limit": 1}
    waiter = schedule(step_tasks.wait_between, ["w", "erp-1", None], **limit)
    assert drain() == {Outcome.SUSPENDED: 1}
    others = [schedule(step_tasks.three_steps, [f"o{n}"], **limit) for n in range(2)]
    assert drain() == {Outcome.SUCCEEDED: 2}
    assert all(job.status == Status.SUCCEEDED for job in Job.objects.filter(pk__in=[o.pk for o in others]))
    aio_async.notify_event("erp-1", {"value": 1})
    assert drain() == {Outcome.SUCCEEDED: 1}
    waiter.refresh_from_db()
    assert waiter.status == Status.SUCCEEDED

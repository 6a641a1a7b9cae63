"""Durable steps as the faces show them, and beside the queue's other rules, on both databases.

The job page lists a job's steps and says what a suspended job waits for; the overview and the
job list count and filter suspended jobs apart from queued ones. A suspended unique job keeps
its key where a running one would; a suspended job holds no slot of its concurrency limit; a
cancelled one stays cancelled when its sleep ends.
"""

from __future__ import annotations

import datetime
from typing import Any

import pytest
from django.contrib.messages import get_messages
from django.test import Client
from django.urls import reverse
from django.utils import timezone

import aio_async
from aio_async import schedule
from aio_async.admin import STEP_LIMIT
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
def client(admin_client: Client) -> Client:
    """pytest-django's client, logged in as a superuser."""
    return admin_client


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


# The job page ------------------------------------------------------------------------------


def test_the_job_page_lists_its_steps_with_their_results_and_errors(client: Client, tmp_path: Any) -> None:
    job = schedule(step_tasks.steps_then_fail_once, ["p", str(tmp_path / "pass")])
    assert drain() == {Outcome.RETRYING: 1}
    rows = step_rows(page_of(client, job))
    first = Record.objects.get(key="p-1").pk
    assert [row[:6] for row in rows] == [
        ["0", "one", "step", "succeeded", "1", rows[0][5]],
        ["1", "two", "step", "failed (runs again)", "1", rows[1][5]],
    ]
    assert rows[0][5].endswith(" s")  # a duration
    assert rows[0][6] == f'<code class="step-result">{first}</code>'
    assert "RuntimeError: no " in rows[1][6]
    assert "step-error" in rows[1][6]


def test_a_sleeping_jobs_page_says_until_when(client: Client) -> None:
    job = schedule(step_tasks.sleep_between, ["z", 3600])
    assert drain() == {Outcome.SUSPENDED: 1}
    nap = Step.objects.get(job=job, name="nap")
    page = page_of(client, job)
    assert "field-waits_for" in page
    assert f"sleeping until {moment(nap.until)}" in page
    rows = step_rows(page)
    assert [row[1:5] for row in rows] == [
        ["before", "step", "succeeded", "1"],
        ["nap", "durable sleep", "sleeping", "1"],
    ]
    assert rows[1][5] == "-"  # still sleeping: no duration yet
    wake(job)
    assert drain() == {Outcome.SUCCEEDED: 1}
    page = page_of(client, job)
    assert "sleeping until" not in page
    assert [row[1:4] for row in step_rows(page)][1:] == [
        ["nap", "durable sleep", "slept"],
        ["after", "step", "succeeded"],
    ]


def test_a_waiting_jobs_page_names_its_event_and_its_timeout(client: Client) -> None:
    forever = schedule(step_tasks.wait_between, ["f", "order-7", None])
    timed = schedule(step_tasks.wait_between, ["t", "order-8", 3600])
    assert drain() == {Outcome.SUSPENDED: 2}
    assert "waiting for event order-7 until no timeout" in page_of(client, forever)
    timeout = Step.objects.get(job=timed, name="approval").until
    page = page_of(client, timed)
    assert f"waiting for event order-8 until {moment(timeout)}" in page
    assert step_rows(page)[1][3] == "waiting for its event"
    assert aio_async.notify_event("order-8", {"value": 5}) == [timed.pk]
    assert drain() == {Outcome.SUCCEEDED: 1}
    rows = step_rows(page_of(client, timed))
    assert rows[1][1:4] == ["approval", "wait for an event", "succeeded"]
    assert rows[1][6] == 'event order-8: <code class="step-result">{&quot;value&quot;: 5}</code>'


def test_a_cancelled_waits_row_says_it_was_cut_short(client: Client) -> None:
    job = schedule(step_tasks.wait_between, ["c", "order-9", None])
    assert drain() == {Outcome.SUSPENDED: 1}
    assert aio_async.cancel(job) == 1
    page = page_of(client, job)
    assert "waiting for event" not in page
    assert step_rows(page)[1][3] == "cut short: job cancelled"


def test_a_long_journal_is_cut_on_the_page(client: Client) -> None:
    job = schedule(step_tasks.record, ["long"])
    Step.objects.bulk_create(
        Step(
            job=job,
            name=f"item-{n}",
            position=n,
            kind="step",
            status="succeeded",
            attempt=1,
            result="x" * 2000,
        )
        for n in range(STEP_LIMIT + 2)
    )
    page = page_of(client, job)
    rows = step_rows(page)
    assert (len(rows), rows[-1][1]) == (STEP_LIMIT, f"item-{STEP_LIMIT - 1}")
    assert "and 2 more steps, not shown." in page
    assert rows[0][6].endswith("… (2002 characters)</code>")  # a JSON string of 2,000 x's, cut


def test_a_job_without_steps_has_no_steps_on_its_page(client: Client) -> None:
    job = schedule(step_tasks.record, ["plain"])
    assert drain() == {Outcome.SUCCEEDED: 1}
    page = page_of(client, job)
    assert "step-journal" not in page
    assert "field-waits_for" not in page


def test_the_overview_and_the_job_list_show_suspended_jobs_apart(client: Client) -> None:
    sleeper = schedule(step_tasks.sleep_between, ["o", 3600])
    assert drain() == {Outcome.SUSPENDED: 1}
    schedule(step_tasks.record, ["later"], run_after=timezone.now() + datetime.timedelta(hours=1))
    overview = client.get(reverse("admin:aio_async_job_overview"))
    [queue] = overview.context["queues"]
    counts = dict(queue.counts)
    assert (counts["suspended"], counts["queued"], queue.due) == (1, 1, 0)
    html = overview.content.decode()
    assert "suspended (sleeping or waiting for an event)" in html
    assert '?queue__exact=default&amp;status__exact=suspended">1</a>' in html
    listing = client.get(reverse("admin:aio_async_job_changelist") + "?status__exact=suspended")
    assert listing.status_code == 200
    assert [job.pk for job in listing.context["cl"].result_list] == [sleeper.pk]
    assert "?status__exact=suspended" in listing.content.decode()  # the filter offers the choice


def test_the_admins_cancel_cancels_a_suspended_job(client: Client) -> None:
    job = schedule(step_tasks.sleep_between, ["x", 3600])
    assert drain() == {Outcome.SUSPENDED: 1}
    data = {"action": "cancel", "_selected_action": [job.pk]}
    response = client.post(reverse("admin:aio_async_job_changelist"), data, follow=True)
    assert [str(message) for message in get_messages(response.wsgi_request)] == ["1 job(s) cancelled."]
    job.refresh_from_db()
    assert job.status == Status.CANCELLED
    assert Error.objects.get(job=job).message == (
        "cancelled by admin in the admin while it was suspended: the steps it committed stay committed"
    )


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

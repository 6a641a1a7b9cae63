"""The admin: lists, the job page, and the actions that retry, cancel, copy and delete jobs."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.admin.models import ADDITION, CHANGE, DELETION, LogEntry
from django.contrib.auth.models import Permission, User
from django.contrib.contenttypes.models import ContentType
from django.contrib.messages import get_messages
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from aio_async import schedule, testing
from aio_async.admin import JobAdmin
from aio_async.models import Error, Group, Job, Queue, Status
from tests.app import tasks

pytestmark = pytest.mark.django_db


@pytest.fixture
def client() -> Client:
    user = User.objects.create_superuser("admin", "admin@example.com", "pw")
    client = Client()
    client.force_login(user)
    return client


def test_job_pages_show_errors_with_tracebacks(client: Client) -> None:
    job = schedule(tasks.write_then_fail, ["x"], max_attempts=1)
    testing.run_jobs()
    listing = client.get(reverse("admin:aio_async_job_changelist") + "?status__exact=failed")
    assert listing.status_code == 200
    assert b"tests.app.tasks.write_then_fail" in listing.content
    page = client.get(reverse("admin:aio_async_job_change", args=[job.pk]))
    assert page.status_code == 200
    assert b"Traceback (most recent call last)" in page.content
    assert b"failing after writing x" in page.content
    assert client.get(reverse("admin:aio_async_error_changelist")).status_code == 200


def test_the_job_page_shows_every_attempt(client: Client) -> None:
    job = schedule(tasks.snooze_then_write, ["s", 1], max_attempts=1)
    testing.drain()
    job.refresh_from_db()
    page = client.get(reverse("admin:aio_async_job_change", args=[job.pk]))
    assert page.status_code == 200
    html = page.content.decode()
    table = html[html.index('<table class="attempt-history">') :]
    table = table[: table.index("</table>")]
    rows = table.split("<tr>")[2:]
    assert [row.split("<td>")[2].split("</td>")[0] for row in rows] == ["snoozed", "succeeded"]
    assert table.count(job.locked_by) == 2


def test_a_job_that_never_ran_has_no_attempts_on_its_page(client: Client) -> None:
    job = schedule(tasks.add, [1, 2])
    page = client.get(reverse("admin:aio_async_job_change", args=[job.pk]))
    assert page.status_code == 200
    assert b"attempt-history" not in page.content


def test_retry_now_requeues_a_failed_job_with_one_more_attempt(client: Client) -> None:
    job = schedule(tasks.write_then_fail, ["x"], max_attempts=1)
    testing.run_jobs()
    response = client.post(
        reverse("admin:aio_async_job_changelist"),
        {"action": "retry_now", "_selected_action": [job.pk]},
    )
    assert response.status_code == 302
    job.refresh_from_db()
    assert (job.status, job.max_attempts, job.attempts) == (Status.QUEUED, 2, 1)
    testing.run_jobs()
    job.refresh_from_db()
    assert job.status == Status.FAILED
    assert job.errors.count() == 2


def test_cancel_releases_a_waiting_final_job(client: Client) -> None:
    group = Group.objects.create(reference="g")
    member = schedule(tasks.add, [1, 1], group=group)
    final = schedule(tasks.add, [2, 2], group=group)
    group.on_completion(final)
    client.post(
        reverse("admin:aio_async_job_changelist"),
        {"action": "cancel", "_selected_action": [member.pk]},
    )
    assert Job.objects.get(pk=member.pk).status == Status.CANCELLED
    assert Job.objects.get(pk=final.pk).status == Status.QUEUED
    page = client.get(reverse("admin:aio_async_group_changelist"))
    assert page.status_code == 200
    assert b'<td class="field-finished_jobs">1</td>' in page.content


@pytest.fixture
def viewer() -> Client:
    """A staff member who may view jobs, and nothing more."""
    user = User.objects.create_user("viewer", "viewer@example.com", "pw", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_job"))
    client = Client()
    client.force_login(user)
    return client


def changelist(query: str = "") -> str:
    return reverse("admin:aio_async_job_changelist") + query


def act(client: Client, action: str, *jobs: Job, **extra: str) -> Any:
    """Post an action of the job list on ``jobs``; the response, redirects followed."""
    data: dict[str, Any] = {"action": action, "_selected_action": [job.pk for job in jobs], **extra}
    return client.post(changelist(), data, follow=True)


def shown(response: Any) -> list[str]:
    """The messages the admin showed after a request."""
    return [str(message) for message in get_messages(response.wsgi_request)]


def log(job: Job) -> list[tuple[int, str]]:
    """The admin log of a job, oldest first: (action flag, message)."""
    entries = LogEntry.objects.filter(
        content_type=ContentType.objects.get_for_model(Job), object_id=str(job.pk)
    ).order_by("pk")
    return [(entry.action_flag, entry.change_message) for entry in entries]


def fail(job: Job) -> None:
    """Mark a job failed for good, as the worker would, without running it."""
    finished = timezone.now()
    Job.objects.filter(pk=job.pk).update(status=Status.FAILED, attempts=1, max_attempts=1, finished=finished)


def test_job_page_shows_the_call_as_indented_json(client: Client) -> None:
    job = schedule(tasks.add, [1, 2], meta={"origin": "test"})
    testing.run_jobs()
    page = client.get(reverse("admin:aio_async_job_change", args=[job.pk])).content.decode()
    assert "[\n  1,\n  2\n]</pre>" in page
    assert "{\n  &quot;origin&quot;: &quot;test&quot;\n}</pre>" in page
    assert ">3</pre>" in page  # the result
    assert 'name="status"' not in page  # the worker's columns are read-only
    assert 'name="priority"' in page


def test_editing_a_job_writes_only_the_edited_fields(client: Client) -> None:
    job = schedule(tasks.add, [1, 2], priority=3)
    url = reverse("admin:aio_async_job_change", args=[job.pk])
    form = client.get(url).context["adminform"].form
    data = {name: form[name].value() for name in form.fields}
    run_after = timezone.localtime(job.run_after)
    data.update(
        priority=9,
        timeout="",
        run_after_0=run_after.date().isoformat(),
        run_after_1=run_after.time().isoformat(),
        **{"errors-TOTAL_FORMS": 0, "errors-INITIAL_FORMS": 0},
    )
    # A worker claims the job while the page is open: saving must not put it back.
    Job.objects.filter(pk=job.pk).update(status=Status.RUNNING, attempts=1)
    response = client.post(url, data)
    assert response.status_code == 302, response.content.decode()[:2000]
    job.refresh_from_db()
    assert (job.priority, job.status, job.attempts) == (9, Status.RUNNING, 1)
    assert client.get(reverse("admin:aio_async_job_add")).status_code == 403


def test_changelist_queries_do_not_grow_with_the_page(client: Client) -> None:
    def count_queries() -> int:
        with CaptureQueriesContext(connection) as queries:
            response = client.get(changelist())
        assert response.status_code == 200
        return len(queries)

    groups = [Group.objects.create(reference=f"g{n}") for n in range(5)]
    for n in range(5):
        schedule(tasks.add, [n, n], group=groups[n])
    few = count_queries()
    for n in range(45):
        schedule(tasks.add, [n, 1], group=groups[n % 5], queue=f"q{n % 3}")
    assert client.get(changelist()).content.count(b'class="action-select"') == 50
    assert count_queries() == few


def test_changelist_filters_and_search(client: Client) -> None:
    schedule(tasks.add, [1, 1], queue="mail")
    schedule(tasks.write, ["k"], queue="mail")
    schedule(tasks.add, [2, 2])
    page = client.get(changelist("?queue__exact=mail&q=add")).content.decode()
    assert "1 job" in page
    assert "tests.app.tasks.add(1, 1)" in page
    page = client.get(changelist("?status__exact=queued&name=tests.app.tasks.write")).content.decode()
    assert "tests.app.tasks.write(&#x27;k&#x27;)" in page
    assert "tests.app.tasks.add(" not in page
    today = timezone.localdate()
    assert client.get(changelist(f"?added__year={today.year}")).status_code == 200


def test_retry_now_and_cancel_write_the_admin_log(client: Client) -> None:
    failed, queued = schedule(tasks.add, [1, 1]), schedule(tasks.add, [2, 2])
    fail(failed)
    assert "1 job(s) queued to run now." in shown(act(client, "retry_now", failed))
    assert log(failed) == [(CHANGE, "Queued to run now.")]
    assert "2 job(s) cancelled." in shown(act(client, "cancel", failed, queued))
    assert log(queued) == [(CHANGE, "Cancelled.")]
    assert Error.objects.get(job=queued).message == "cancelled by admin in the admin before it ran"


def test_reenqueue_queues_a_copy_of_a_finished_job(client: Client) -> None:
    done = schedule(tasks.add, [1, 2], priority=3, queue="other", max_attempts=2, timeout=30, meta={"m": 1})
    testing.run_jobs(queues=("other",))
    pending = schedule(tasks.add, [5, 5])
    before = timezone.now()
    messages = shown(act(client, "reenqueue", done, pending))
    copy = Job.objects.exclude(pk__in=[done.pk, pending.pk]).get()
    assert f"1 new job(s) queued: #{copy.pk}." in messages
    assert any("1 selected job(s) have not finished" in message for message in messages)
    assert (copy.name, copy.args, copy.kwargs, copy.meta) == (done.name, [1, 2], {}, {"m": 1})
    assert (copy.queue, copy.priority, copy.max_attempts, copy.timeout) == ("other", 3, 2, 30)
    assert (copy.status, copy.attempts, copy.result) == (Status.QUEUED, 0, None)
    assert copy.run_after >= before
    assert log(copy) == [(ADDITION, f"Queued as a copy of job {done.pk}.")]
    assert log(done) == [(CHANGE, f"Copied as job {copy.pk}.")]
    done.refresh_from_db()
    assert (done.status, done.result) == (Status.SUCCEEDED, 3)


def test_duplicate_copies_unfinished_jobs_too(client: Client) -> None:
    pending = schedule(tasks.decorated, ["k"])
    assert "1 new job(s) queued" in shown(act(client, "duplicate", pending))[0]
    assert (
        sorted(Job.objects.values_list("name", "status", "queue", "priority"))
        == [("tests.app.tasks.decorated", Status.QUEUED, "tasks", 7)] * 2
    )


def test_copies_pass_the_allow_list_again(client: Client) -> None:
    rogue = Job.objects.create(name="os.system", args=["true"], identity="x")
    messages = shown(act(client, "duplicate", rogue))
    assert messages[0].startswith("1 job(s) not copied: job ")
    assert "os.system" in messages[0]
    assert Job.objects.count() == 1


def test_delete_removes_the_jobs_with_their_errors(client: Client) -> None:
    job = schedule(tasks.write_then_fail, ["x"], max_attempts=2)
    testing.run_jobs()
    Job.objects.filter(pk=job.pk).update(run_after=timezone.now())
    testing.run_jobs()
    assert Error.objects.filter(job=job).count() == 2
    confirm = act(client, "delete_selected", job)
    assert b"Are you sure" in confirm.content
    act(client, "delete_selected", job, post="yes")
    assert not Job.objects.filter(pk=job.pk).exists()
    assert not Error.objects.exists()
    assert log(job) == [(DELETION, "")]


def test_retry_failed_covers_every_page_of_the_filtered_list(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(JobAdmin, "list_per_page", 2)
    mail = [schedule(tasks.add, [n, 0], queue="mail") for n in range(3)]
    other = schedule(tasks.add, [9, 9])
    for job in [*mail, other]:
        fail(job)
    succeeded = schedule(tasks.add, [0, 0], queue="mail")
    Job.objects.filter(pk=succeeded.pk).update(status=Status.SUCCEEDED)
    listing = client.get(changelist("?queue__exact=mail")).content.decode()
    url = reverse("admin:aio_async_job_retry_failed") + "?queue__exact=mail"
    assert f'href="{url}"' in listing.replace("&amp;", "&")
    confirm = client.get(url)
    assert b"3 failed job(s) match" in confirm.content
    assert Job.objects.filter(status=Status.FAILED).count() == 4  # asking changes nothing
    response = client.post(url, follow=True)
    assert response.redirect_chain[-1][0] == changelist("?queue__exact=mail")
    assert "3 failed job(s) queued to run now." in shown(response)
    statuses = dict(Job.objects.values_list("pk", "status"))
    assert [statuses[job.pk] for job in mail] == [Status.QUEUED] * 3
    assert (statuses[other.pk], statuses[succeeded.pk]) == (Status.FAILED, Status.SUCCEEDED)
    assert log(mail[0]) == [(CHANGE, "Queued to run now (retry of the failed jobs in a filtered list).")]
    assert client.get(reverse("admin:aio_async_job_retry_failed") + "?nope=1").status_code == 302


def test_retry_failed_needs_a_csrf_token() -> None:
    user = User.objects.create_superuser("admin", "admin@example.com", "pw")
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(user)
    job = schedule(tasks.add, [1, 1])
    fail(job)
    assert strict.post(reverse("admin:aio_async_job_retry_failed")).status_code == 403
    assert Job.objects.get(pk=job.pk).status == Status.FAILED


def test_view_permission_shows_jobs_but_changes_none(viewer: Client) -> None:
    job = schedule(tasks.add, [1, 1])
    fail(job)
    listing = viewer.get(changelist())
    assert listing.status_code == 200
    assert b">tests.app.tasks.add<" in listing.content
    assert b"retry-failed" not in listing.content
    assert b'value="retry_now"' not in listing.content
    for action in ("retry_now", "cancel", "reenqueue", "duplicate", "delete_selected"):
        act(viewer, action, job, post="yes")
    assert viewer.post(reverse("admin:aio_async_job_retry_failed")).status_code == 403
    assert list(Job.objects.values_list("status", flat=True)) == [Status.FAILED]
    assert not LogEntry.objects.exists()
    assert viewer.get(reverse("admin:aio_async_job_change", args=[job.pk])).status_code == 200
    assert viewer.get(reverse("admin:aio_async_job_overview")).status_code == 200


def test_adding_a_queue_pauses_it_and_the_actions_resume_and_pause_it(client: Client) -> None:
    added = client.post(reverse("admin:aio_async_queue_add"), {"name": "mail"}, follow=True)
    assert added.status_code == 200
    row = Queue.objects.get(name="mail")
    assert (row.paused, row.changed_by) == (True, "admin in the admin")
    queues_page = reverse("admin:aio_async_queue_changelist")
    resumed = client.post(queues_page, {"action": "resume", "_selected_action": ["mail"]}, follow=True)
    assert shown(resumed) == ["1 queue(s) resumed."]
    assert not Queue.objects.get(name="mail").paused
    paused = client.post(queues_page, {"action": "pause", "_selected_action": ["mail"]}, follow=True)
    assert shown(paused) == ["1 queue(s) paused."]
    assert Queue.objects.get(name="mail").paused
    assert LogEntry.objects.filter(object_id="mail").count() == 3  # added, resumed, paused


def test_cancel_in_the_admin_cancels_a_running_job_too(client: Client) -> None:
    running = schedule(tasks.add, [1, 1])
    Job.objects.filter(pk=running.pk).update(status=Status.RUNNING, attempts=1, locked_by="w")
    assert shown(act(client, "cancel", running)) == ["1 job(s) cancelled."]
    running.refresh_from_db()
    assert running.status == Status.CANCELLED
    assert running.errors.get().message.startswith("cancelled by admin in the admin while it ran")


def test_job_page_links_the_jobs_it_runs_after_and_before(client: Client) -> None:
    first = schedule(tasks.add, [1, 2])
    gone = schedule(tasks.add, [3, 4])
    then = schedule(tasks.add, [5, 6], after=[first, gone])
    Job.objects.filter(pk=gone.pk).delete()
    page = client.get(reverse("admin:aio_async_job_change", args=[then.pk])).content.decode()
    link = reverse("admin:aio_async_job_change", args=[first.pk])
    assert f'<div><a href="{link}">job {first.pk}</a> (tests.app.tasks.add, queued)</div>' in page
    assert "<div>a deleted job</div>" in page
    page = client.get(reverse("admin:aio_async_job_change", args=[first.pk])).content.decode()
    assert f"job {then.pk}</a> (tests.app.tasks.add, waiting)" in page
    alone = schedule(tasks.add, [7, 8])
    assert (
        "Dependencies"
        not in client.get(reverse("admin:aio_async_job_change", args=[alone.pk])).content.decode()
    )

"""The admin: lists, inline errors with tracebacks, retry-now and cancel actions."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

from aio_async import schedule, testing
from aio_async.models import Group, Job, Status
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

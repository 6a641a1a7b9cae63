"""The health endpoint: 200 or 503 by the settings' thresholds, to staff or a bearer token only."""

from __future__ import annotations

import datetime
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.test import Client, override_settings
from django.utils import timezone

from aio_async import schedule
from aio_async.models import Error, Worker
from tests.app import tasks

pytestmark = pytest.mark.django_db

URL = "/queue/health/"
TOKEN = "s3cret-token-for-probes"


def with_health(**health: Any) -> Any:
    """The test settings with AIO_ASYNC["HEALTH"] set."""
    return override_settings(AIO_ASYNC={**getattr(settings, "AIO_ASYNC", {}), "HEALTH": health})


def alive(seconds_ago: float = 0) -> Worker:
    """A worker row, as a worker that runs records itself."""
    now = timezone.now()
    return Worker.objects.create(
        id=f"host:1:{seconds_ago}",
        host="host",
        pid=1,
        queues="default",
        concurrency=10,
        started=now - datetime.timedelta(hours=1),
        heartbeat=now - datetime.timedelta(seconds=seconds_ago),
    )


@pytest.fixture
def staff() -> Client:
    client = Client()
    client.force_login(User.objects.create_user("ops", password="pw", is_staff=True))
    return client


def test_anyone_else_is_refused() -> None:
    assert Client().get(URL).status_code == 403
    member = Client()
    member.force_login(User.objects.create_user("member", password="pw"))
    assert member.get(URL).status_code == 403
    with with_health(TOKEN=TOKEN):
        assert (
            Client().get(URL, headers={"Authorization": "Bearer wrong-token-of-any-length"}).status_code
            == 403
        )
        assert Client().get(URL, headers={"Authorization": TOKEN}).status_code == 403  # not a bearer
    assert Client().get(URL, headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 403  # no token set


def test_a_healthy_queue_answers_200_to_staff(staff: Client) -> None:
    alive()
    schedule(tasks.add, [1, 1])
    response = staff.get(URL)
    assert response.status_code == 200
    body = response.json()
    assert (body["healthy"], body["problems"], body["queued"]) == (True, [], 1)
    assert [worker["id"] for worker in body["workers"]] == ["host:1:0"]
    assert body["recent_failures"] == {"seconds": 300.0, "attempts_failed": 0}
    assert staff.post(URL).status_code == 405


def test_a_probe_with_the_token_is_answered() -> None:
    alive()
    with with_health(TOKEN=TOKEN):
        response = Client().get(URL, headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200
    assert response["Cache-Control"].startswith("max-age=0")


def test_an_old_due_job_makes_it_503(staff: Client) -> None:
    alive()
    schedule(tasks.add, [1, 1], run_after=timezone.now() - datetime.timedelta(minutes=10))
    with with_health(MAX_DUE_AGE=60):
        response = staff.get(URL)
    assert response.status_code == 503
    [problem] = response.json()["problems"]
    assert problem.startswith("the oldest due job has waited ")
    assert problem.endswith("(more than 60 s)")


def test_no_worker_heard_of_makes_it_503(staff: Client) -> None:
    alive(seconds_ago=600)
    with with_health(MAX_HEARTBEAT_AGE=120):
        response = staff.get(URL)
    assert response.status_code == 503
    assert response.json()["problems"] == ["no worker was heard of in the last 120 s"]


def test_failures_over_the_threshold_make_it_503_and_cancellations_are_not_failures(staff: Client) -> None:
    alive()
    job = schedule(tasks.add, [1, 1])
    for attempt in range(3):
        Error.objects.create(job=job, attempt=attempt, exception="builtins.ValueError", message="no")
    Error.objects.create(job=job, attempt=3, exception="aio_async.errors.JobCancelled", message="by ops")
    old = Error.objects.create(job=job, attempt=4, exception="builtins.ValueError", message="long ago")
    Error.objects.filter(pk=old.pk).update(created=timezone.now() - datetime.timedelta(hours=1))
    with with_health(MAX_FAILURES=3):
        assert staff.get(URL).status_code == 200
    with with_health(MAX_FAILURES=2, FAILURE_WINDOW=600):
        response = staff.get(URL)
    assert response.status_code == 503
    assert response.json()["problems"] == ["3 attempts failed in the last 600 s (more than 2)"]


@pytest.mark.parametrize(
    ("health", "message"),
    [
        ({"TOKEN": "short"}, "at least 16 characters"),
        ({"MAX_FAILURES": -1}, "MAX_FAILURES"),
        ({"SPEED": 1}, "Unknown AIO_ASYNC\\['HEALTH'\\] keys \\['SPEED'\\]"),
        ("on", "must be a dict"),
    ],
)
def test_bad_health_settings_are_a_configuration_error(health: object, message: str) -> None:
    from django.core.exceptions import ImproperlyConfigured

    from aio_async.conf import parse_settings

    with pytest.raises(ImproperlyConfigured, match=message):
        parse_settings({"HEALTH": health})


def test_jobs_of_a_paused_queue_wait_on_purpose_and_do_not_make_it_503(staff: Client) -> None:
    from aio_async.queues import pause

    alive()
    schedule(tasks.add, [1, 1], queue="mail", run_after=timezone.now() - datetime.timedelta(minutes=10))
    pause("mail")
    with with_health(MAX_DUE_AGE=60):
        response = staff.get(URL)
    assert response.status_code == 200
    assert response.json()["paused_queues"] == ["mail"]


def test_without_prometheus_client_the_metrics_page_names_the_extra(
    staff: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib.util

    from django.urls import clear_url_caches

    import aio_async.urls
    import tests.urls

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "prometheus_client" else find_spec(name, *a),
    )
    try:
        importlib.reload(aio_async.urls)
        importlib.reload(tests.urls)
        clear_url_caches()
        assert Client().get("/queue/metrics/").status_code == 403
        page = staff.get("/queue/metrics/")
        assert page.status_code == 501
        assert (
            page.content
            == b"aio_async's metrics need prometheus_client: pip install 'aio_async[prometheus]'\n"
        )
    finally:
        monkeypatch.undo()
        importlib.reload(aio_async.urls)
        importlib.reload(tests.urls)
        clear_url_caches()
    # Back to what this environment has (the psycopg2 run installs no extras).
    installed = find_spec("prometheus_client") is not None
    assert staff.get("/queue/metrics/").status_code == (200 if installed else 501)

"""The admin's queue overview: counts per queue, oldest due job, throughput, groups, a chart."""

from __future__ import annotations

import base64
import datetime
import fcntl
import json
import mimetypes
import os
import re
import select
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

import pytest
from django.conf import settings
from django.contrib import admin
from django.contrib.auth.models import User
from django.core.wsgi import get_wsgi_application
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from aio_async import schedule
from aio_async.models import Group, Job, Status
from tests.app import tasks

pytestmark = pytest.mark.django_db

OVERVIEW = "admin:aio_async_job_overview"

#: Where the browser test leaves its screenshot.
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


@pytest.fixture
def client() -> Client:
    user = User.objects.create_superuser("admin", "admin@example.com", "pw")
    client = Client()
    client.force_login(user)
    return client


def ago(**delta: float) -> datetime.datetime:
    return timezone.now() - datetime.timedelta(**delta)


def job(status: str = Status.QUEUED, *, queue: str = "default", **fields: object) -> Job:
    """A job of ``queue`` put in ``status`` with ``fields``, as the worker would leave it."""
    made = schedule(tasks.add, [1, 1], queue=queue)
    Job.objects.filter(pk=made.pk).update(status=status, **fields)
    made.refresh_from_db()
    return made


def test_counts_per_queue_and_status_with_the_oldest_due_job(client: Client) -> None:
    job(queue="mail", run_after=ago(minutes=5))
    oldest = job(queue="mail", run_after=ago(minutes=30))
    job(queue="mail", run_after=ago(minutes=-60))  # not due yet
    job(Status.RUNNING, queue="mail")
    job(Status.SUSPENDED, queue="mail", run_after=ago(minutes=10))  # woken soon: not due, not queued
    job(Status.FAILED, queue="default")
    response = client.get(reverse(OVERVIEW))
    assert response.status_code == 200
    queues = {row.name: row for row in response.context["queues"]}
    assert sorted(queues) == ["default", "mail"]
    mail = queues["mail"]
    assert dict(mail.counts) == {
        "waiting": 0,
        "queued": 3,
        "running": 1,
        "succeeded": 0,
        "failed": 0,
        "cancelled": 0,
        "suspended": 1,
    }
    assert mail.due == 2
    assert mail.oldest is not None
    assert mail.oldest["pk"] == oldest.pk
    assert mail.oldest["waiting_text"].startswith("30 min ")
    assert queues["default"].oldest is None
    assert dict(queues["default"].counts)["failed"] == 1
    page = response.content.decode()
    assert f'href="/admin/aio_async/job/{oldest.pk}/change/">#{oldest.pk} tests.app.tasks.add</a>' in page
    assert '?queue__exact=mail&amp;status__exact=queued">3</a>' in page


def test_throughput_over_the_last_hour_and_day(client: Client) -> None:
    job(Status.SUCCEEDED, finished=ago(minutes=10))
    job(Status.SUCCEEDED, finished=ago(hours=5))
    job(Status.SUCCEEDED, finished=ago(days=2))
    job(Status.FAILED, finished=ago(minutes=59))
    job(Status.FAILED, finished=ago(hours=23))
    job(Status.CANCELLED, finished=ago(minutes=1))
    (row,) = client.get(reverse(OVERVIEW)).context["queues"]
    assert (row.succeeded_hour, row.failed_hour, row.succeeded_day, row.failed_day) == (1, 1, 2, 2)


def test_groups_in_progress_with_an_estimated_completion(client: Client) -> None:
    started = ago(hours=1)
    busy, fresh, done = (Group.objects.create(reference=name) for name in ("busy", "fresh", "done"))
    for status, seconds in ((Status.SUCCEEDED, 10), (Status.SUCCEEDED, 20), (Status.FAILED, 30)):
        job(status, group=busy, started=started, finished=started + datetime.timedelta(seconds=seconds))
    job(Status.CANCELLED, group=busy, finished=started)  # cancelled before it ran: no run time
    job(group=busy)
    job(Status.RUNNING, group=busy, started=ago(seconds=1))
    job(group=fresh)
    job(Status.SUCCEEDED, group=done, started=started, finished=started)
    before = timezone.now()
    response = client.get(reverse(OVERVIEW))
    after = timezone.now()
    rows = {row.reference: row for row in response.context["groups"]}
    assert sorted(rows) == ["busy", "fresh"]
    row = rows["busy"]
    assert (row.total, row.executed, row.failed, row.remaining, row.percent) == (6, 4, 1, 2, 67)
    assert row.average == datetime.timedelta(seconds=20)
    assert row.estimated is not None
    assert before + datetime.timedelta(seconds=40) <= row.estimated <= after + datetime.timedelta(seconds=40)
    assert (rows["fresh"].average, rows["fresh"].estimated) == (None, None)
    page = response.content.decode()
    assert '<td class="average">20 s</td>' in page
    assert '<td class="estimated">unknown</td>' in page


def test_the_number_of_queries_is_bounded(client: Client) -> None:
    def count_queries() -> int:
        with CaptureQueriesContext(connection) as queries:
            assert client.get(reverse(OVERVIEW)).status_code == 200
        return len(queries)

    def populate(name: str) -> None:
        group = Group.objects.create(reference=name)
        job(queue=name, group=group, run_after=ago(minutes=1))
        job(Status.SUCCEEDED, queue=name, group=group, started=ago(minutes=3), finished=ago(minutes=2))
        job(Status.FAILED, queue=name, finished=ago(hours=2))

    populate("first")
    few = count_queries()
    for n in range(6):
        populate(f"queue{n}")
    response = client.get(reverse(OVERVIEW))
    assert len(response.context["queues"]) == len(response.context["groups"]) == 7
    assert count_queries() == few


def test_the_paused_column_follows_pause(client: Client) -> None:
    from aio_async import queues

    job(queue="mail")
    queues.pause("mail")
    (row,) = client.get(reverse(OVERVIEW)).context["queues"]
    assert (row.name, row.paused) == ("mail", True)


def test_hourly_chart_of_the_last_day(client: Client) -> None:
    now = timezone.now()
    job(Status.SUCCEEDED, finished=now)
    job(Status.SUCCEEDED, finished=now)
    job(Status.FAILED, finished=now)
    job(Status.SUCCEEDED, finished=now - datetime.timedelta(hours=3))
    job(Status.SUCCEEDED, finished=now - datetime.timedelta(hours=30))  # too old to show
    response = client.get(reverse(OVERVIEW))
    chart = response.context["chart"]
    bars = chart["bars"]
    assert len(bars) == 24
    assert (bars[-1].succeeded, bars[-1].failed) == (2, 1)
    assert (bars[-4].succeeded, bars[-4].failed) == (1, 0)
    assert sum(bar.succeeded + bar.failed for bar in bars) == 4
    assert (chart["succeeded"], chart["failed"], chart["peak"]) == (3, 1, 3)
    assert bars[-1].start <= timezone.localtime(now) < bars[-1].start + datetime.timedelta(hours=1)
    # The busiest hour fills the plot: its two bars stack up to the top.
    assert bars[-1].failed_y == chart["top"]
    assert bars[-1].succeeded_height == pytest.approx(2 * bars[-1].failed_height)
    page = response.content.decode()
    assert page.count('<rect class="chart-succeeded"') == 2 + 1  # two hours, and the legend
    assert page.count('<rect class="chart-failed"') == 1 + 1
    assert 'aria-label="Jobs finished per hour over the last 24 hours: 3 succeeded, 1 failed"' in page


def test_the_overview_needs_the_view_permission(client: Client) -> None:
    staff = User.objects.create_user("staff", "staff@example.com", "pw", is_staff=True)
    other = Client()
    other.force_login(staff)
    assert other.get(reverse(OVERVIEW)).status_code == 403
    listing = client.get(reverse("admin:aio_async_job_changelist")).content.decode()
    assert f'href="{reverse(OVERVIEW)}"' in listing


def high(fd: int) -> int:
    """``fd`` moved to a descriptor number of 10 or more."""
    moved = fcntl.fcntl(fd, fcntl.F_DUPFD, 10)
    os.close(fd)
    return moved


class Chromium:
    """Headless Chromium driven over the DevTools protocol, on a pair of pipes (no library)."""

    def __init__(self, executable: str, profile: Path) -> None:
        commands_in, self.commands = os.pipe()
        self.replies, replies_out = os.pipe()
        # Chromium reads commands on fd 3 and writes replies on fd 4: bash moves the child's ends
        # there, from numbers above 9 so that neither is 3 or 4 already.
        commands_in, replies_out = (high(fd) for fd in (commands_in, replies_out))
        script = f'exec "$0" "$@" 3<&{commands_in} 4>&{replies_out} {commands_in}<&- {replies_out}>&-'
        self.process = subprocess.Popen(
            [
                "bash",
                "-c",
                script,
                executable,
                "--headless",
                "--remote-debugging-pipe",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                f"--user-data-dir={profile}",
                "--window-size=1280,1600",
                "about:blank",
            ],
            pass_fds=(commands_in, replies_out),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(commands_in)
        os.close(replies_out)
        self.buffer = b""
        self.last_id = 0
        self.events: list[dict[str, Any]] = []
        self.deadline = time.monotonic() + 60

    def send(self, method: str, session: str | None = None, **params: Any) -> dict[str, Any]:
        """Send a command; return its result, keeping the events that came before it."""
        self.last_id += 1
        message: dict[str, Any] = {"id": self.last_id, "method": method, "params": params}
        if session is not None:
            message["sessionId"] = session
        os.write(self.commands, json.dumps(message).encode() + b"\0")
        while True:
            reply = self.receive()
            if reply.get("id") == self.last_id:
                assert "error" not in reply, reply
                result: dict[str, Any] = reply["result"]
                return result
            self.events.append(reply)

    def wait_for(self, event: str) -> None:
        """Wait until Chromium has sent ``event``."""
        while not any(message.get("method") == event for message in self.events):
            self.events.append(self.receive())

    def receive(self) -> dict[str, Any]:
        """The next message from Chromium."""
        while b"\0" not in self.buffer:
            ready, _, _ = select.select([self.replies], [], [], max(self.deadline - time.monotonic(), 0))
            assert ready, "Chromium did not answer within a minute"
            chunk = os.read(self.replies, 1 << 16)
            assert chunk, "Chromium closed its pipe"
            self.buffer += chunk
        message, self.buffer = self.buffer.split(b"\0", 1)
        parsed: dict[str, Any] = json.loads(message)
        return parsed

    def close(self) -> None:
        """Close the browser and its pipes."""
        try:
            os.write(self.commands, json.dumps({"id": 0, "method": "Browser.close"}).encode() + b"\0")
            self.process.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            self.process.kill()
            self.process.wait()
        finally:
            os.close(self.commands)
            os.close(self.replies)


#: What the browser measured of the chart: its size, and each bar's size, colour and place.
MEASURE = """(() => {
  const chart = document.querySelector("#hourly-chart").getBoundingClientRect();
  const bars = [...document.querySelectorAll("#hourly-chart rect")].map((rect) => {
    const box = rect.getBoundingClientRect();
    return {
      kind: rect.getAttribute("class"),
      height: box.height,
      fill: getComputedStyle(rect).fill,
      inside: box.left >= chart.left && box.right <= chart.right
        && box.top >= chart.top && box.bottom <= chart.bottom,
    };
  });
  return {title: document.title, width: chart.width, height: chart.height, bars};
})()"""


class QuietHandler(WSGIRequestHandler):
    """A request handler that does not log each request."""

    def log_message(self, format: str, *args: Any) -> None:
        """Say nothing."""


#: The admin's own CSS, JavaScript and images, which its pages link relative to themselves
#: (these settings have no STATIC_URL).
ADMIN_STATIC = Path(admin.__file__).parent / "static"
ADMIN_ASSET = re.compile(r"/(admin/(?:css|js|img)/[\w./-]+)$")


def with_admin_assets(app: Any) -> Any:
    """``app``, serving the admin's static files itself."""

    def serve(environ: dict[str, Any], start_response: Any) -> Any:
        found = ADMIN_ASSET.search(environ["PATH_INFO"])
        asset = ADMIN_STATIC / found.group(1) if found else None
        if asset is None or ".." in asset.parts or not asset.is_file():
            return app(environ, start_response)
        kind = mimetypes.guess_type(asset.name)[0] or "application/octet-stream"
        start_response("200 OK", [("Content-Type", kind)])
        return [asset.read_bytes()]

    return serve


@pytest.fixture
def server_url() -> Iterator[str]:
    """The project served over HTTP on a free local port, from a thread of this process.

    Not pytest-django's ``live_server``: its static files handler needs a STATIC_URL, which
    these settings leave out.
    """
    server = make_server(
        "127.0.0.1", 0, with_admin_assets(get_wsgi_application()), handler_class=QuietHandler
    )
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.mark.skipif(shutil.which("chromium") is None, reason="needs Debian's chromium")
@pytest.mark.django_db(transaction=True)
def test_the_chart_renders_in_a_real_browser(server_url: str, tmp_path: Path) -> None:
    now = timezone.now()
    job(Status.SUCCEEDED, finished=now)
    job(Status.SUCCEEDED, finished=now)
    job(Status.FAILED, finished=now)
    user = User.objects.create_superuser("admin", "admin@example.com", "pw")
    client = Client()
    client.force_login(user)
    cookie = client.cookies[settings.SESSION_COOKIE_NAME].value
    browser = Chromium(shutil.which("chromium") or "chromium", tmp_path / "profile")
    try:
        target = browser.send("Target.createTarget", url="about:blank")["targetId"]
        session = browser.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        browser.send(
            "Network.setCookie", session, name=settings.SESSION_COOKIE_NAME, value=cookie, url=server_url
        )
        browser.send("Page.enable", session)
        browser.send("Page.navigate", session, url=server_url + reverse(OVERVIEW))
        browser.wait_for("Page.loadEventFired")
        seen = browser.send("Runtime.evaluate", session, expression=MEASURE, returnByValue=True)
        shot = browser.send("Page.captureScreenshot", session, format="png")
    finally:
        browser.close()
    # Kept as the test run's artifact, for a person to look at.
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "admin-overview.png").write_bytes(png := base64.b64decode(shot["data"]))
    assert png.startswith(b"\x89PNG")
    measured = seen["result"]["value"]
    assert measured["title"].startswith("Queue overview")
    assert (measured["width"], measured["height"]) == (626, 160)
    bars = sorted((bar["kind"], round(bar["height"]), bar["fill"], bar["inside"]) for bar in measured["bars"])
    assert bars == [
        ("chart-failed", 40, "rgb(196, 55, 47)", True),
        ("chart-succeeded", 80, "rgb(63, 143, 79)", True),
    ]

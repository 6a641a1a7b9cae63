"""Periodic jobs: one job per tick, by the database's unique (schedule, tick), on both databases."""

from __future__ import annotations

import datetime
import json
import os
import threading
import zoneinfo
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.db import connection
from django.utils import timezone

from aio_async import InvalidOption, ScheduleError, periodic, task
from aio_async.conf import parse_settings
from aio_async.cron import _DECLARED, PeriodicRunner, fire, schedules
from aio_async.models import Job, Status, Tick
from aio_async.schedules import Schedule
from tests.acceptance.test_cli import ROOT, run

pytestmark = pytest.mark.django_db(transaction=True)

PARIS = zoneinfo.ZoneInfo("Europe/Paris")


def every(cron: str, name: str = "s", **options: Any) -> Schedule:
    return Schedule.checked(name=name, cron=cron, task="tests.app.tasks.add", args=[1, 2], **options)


def fire_all(schedule: Schedule, start: datetime.datetime, end: datetime.datetime) -> list[int]:
    """Fire every tick from ``start`` to ``end``, as workers running all along would."""
    return [job for tick in schedule.ticks(start, end) if (job := fire(schedule, tick)) is not None]


def test_a_tick_fired_twice_makes_one_job() -> None:
    schedule = every("*/5 * * * *")
    tick = schedule.next_tick(timezone.now())
    first = fire(schedule, tick)
    assert first is not None
    assert fire(schedule, tick) is None
    job = Job.objects.get()
    assert (job.pk, job.name, job.args) == (first, "tests.app.tasks.add", [1, 2])
    assert job.meta == {"periodic": "s", "tick": schedule.key(tick)}
    assert Tick.objects.get().job_id == first


@pytest.mark.parametrize(
    ("day", "hours"),
    [("2026-03-29", 23), ("2026-10-25", 25), ("2026-06-01", 24)],
    ids=["spring-forward", "fall-back", "ordinary"],
)
def test_a_fixed_time_runs_once_a_day_and_an_hourly_one_every_real_hour(day: str, hours: int) -> None:
    start = datetime.datetime.fromisoformat(f"{day}T00:00:00").replace(tzinfo=PARIS)
    end = start + datetime.timedelta(days=1) - datetime.timedelta(seconds=1)  # local midnight to midnight
    daily = every("30 2 * * *", "daily", timezone="Europe/Paris")
    assert len(fire_all(daily, start - datetime.timedelta(seconds=1), end)) == 1
    hourly = every("0 * * * *", "hourly", timezone="Europe/Paris")
    made = fire_all(hourly, start - datetime.timedelta(seconds=1), end)
    assert len(made) == hours  # the repeated hour runs twice, the skipped one not at all


def test_the_spring_forward_run_of_a_skipped_time_happens_when_the_clock_moves_on() -> None:
    daily = every("30 2 * * *", timezone="Europe/Paris")
    [tick] = list(
        daily.ticks(
            datetime.datetime(2026, 3, 29, 0, 0, tzinfo=PARIS),
            datetime.datetime(2026, 3, 29, 12, 0, tzinfo=PARIS),
        )
    )
    assert tick.astimezone(PARIS).hour == 3


def test_a_schedule_that_does_not_overlap_skips_ticks_until_its_job_finished() -> None:
    schedule = every("* * * * * *", overlap=False)
    now = timezone.now()
    ticks = list(schedule.ticks(now, now + datetime.timedelta(seconds=4)))
    first = fire(schedule, ticks[0])
    assert first is not None
    assert fire(schedule, ticks[1]) is None  # the first job is still queued
    Job.objects.filter(pk=first).update(status=Status.RUNNING)
    assert fire(schedule, ticks[2]) is None
    Job.objects.filter(pk=first).update(status=Status.SUCCEEDED)
    assert fire(schedule, ticks[3]) is not None
    assert Job.objects.count() == 2
    assert Tick.objects.count() == 4  # skipped ticks are recorded, without a job


@pytest.mark.parametrize(("replay", "made"), [(0, 0), (3, 3), (10, 5)])
def test_missed_ticks_are_made_up_for_only_as_far_as_the_schedule_replays(replay: int, made: int) -> None:
    schedule = every("* * * * * *", replay=replay)
    t0 = timezone.now().replace(microsecond=0)
    assert fire(schedule, t0) is not None  # the last tick a worker fired before all stopped
    runner = PeriodicRunner([schedule])
    later = t0 + datetime.timedelta(seconds=5, milliseconds=500)  # ticks t0+1 … t0+5 were missed
    assert len(runner.start(later)) == made
    assert Job.objects.count() == 1 + made
    assert runner.next[schedule.name] == t0 + datetime.timedelta(seconds=6)


def test_a_worker_that_fell_behind_fires_the_latest_tick() -> None:
    schedule = every("* * * * * *")
    runner = PeriodicRunner([schedule])
    t0 = timezone.now().replace(microsecond=0)
    runner.start(t0)
    assert runner.due(t0 + datetime.timedelta(milliseconds=500)) == []
    [job] = runner.due(t0 + datetime.timedelta(seconds=3, milliseconds=200))
    assert Job.objects.get(pk=job).meta["tick"] == schedule.key(t0 + datetime.timedelta(seconds=3))
    assert runner.seconds_to_next(t0 + datetime.timedelta(seconds=3, milliseconds=200)) == pytest.approx(0.8)


@pytest.mark.postgres_only
def test_workers_firing_one_tick_at_once_make_one_job() -> None:
    schedule = every("*/5 * * * *")
    tick = schedule.next_tick(timezone.now())
    barrier = threading.Barrier(10)
    made: list[int | None] = []

    def worker() -> None:
        barrier.wait()
        try:
            made.append(fire(schedule, tick))
        finally:
            connection.close()

    threads = [threading.Thread(target=worker) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len([job for job in made if job is not None]) == 1
    assert Job.objects.count() == 1


@pytest.fixture
def declared() -> Iterator[None]:
    """Forget the schedules a test declares."""
    before = dict(_DECLARED)
    yield
    _DECLARED.clear()
    _DECLARED.update(before)


@pytest.mark.usefixtures("declared")
def test_the_decorator_declares_a_schedule_of_its_task() -> None:
    @periodic("0 3 * * *", args=[1], queue="nightly", timezone="Europe/Paris")
    @task(name="tests.periodic.nightly")
    def nightly(n: int) -> None:
        """A nightly task."""

    [found] = [schedule for schedule in schedules() if schedule.name == "tests.periodic.nightly"]
    assert (found.task, found.args, found.queue, found.cron) == (
        "tests.periodic.nightly",
        [1],
        "nightly",
        "0 3 * * *",
    )
    with pytest.raises(InvalidOption, match=r"named 'tests\.periodic\.nightly' exists already"):
        periodic("0 4 * * *")(nightly)
    periodic("0 4 * * *", name="early")(nightly)
    assert {"tests.periodic.nightly", "early"} <= {schedule.name for schedule in schedules()}


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"cron": "every day"}, "cron must be a cron string"),
        ({"cron": "61 * * * *"}, "cron must be a cron string"),
        ({"cron": "* * * * *", "timezone": "Mars/Olympus"}, "timezone must be a time zone name"),
        ({"cron": "* * * * *", "replay": -1}, "replay must be an integer from 0 to 1000"),
        ({"cron": "* * * * *", "overlap": "no"}, "overlap must be True or False"),
        ({"cron": "* * * * *", "args": [object()]}, "args\\[0\\] is a object"),
    ],
)
def test_a_bad_schedule_is_refused(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ScheduleError, match=message):
        Schedule.checked(name="s", task="tests.app.tasks.add", **options)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("0 * * * *", r"AIO_ASYNC\['PERIODIC'\] must be a list of dicts"),
        ([{"CRON": "0 * * * *"}], r"\[0\] must be a dict with CRON and TASK"),
        (
            [{"CRON": "0 * * * *", "TASK": "a.b", "EVERY": 1}],
            r"Unknown AIO_ASYNC\['PERIODIC'\]\[0\] keys \['EVERY'\]",
        ),
        ([{"CRON": "0 * * *", "TASK": "a.b"}], r"\[0\]: cron must be a cron string"),
        (
            [{"CRON": "0 * * * *", "TASK": "a.b"}, {"CRON": "5 * * * *", "TASK": "a.b"}],
            "give this one a NAME",
        ),
    ],
)
def test_a_bad_periodic_setting_is_refused(raw: object, message: str) -> None:
    with pytest.raises(ImproperlyConfigured, match=message):
        parse_settings({"PERIODIC": raw})


def test_the_command_line_lists_the_schedules_with_their_next_tick() -> None:
    setting = [{"CRON": "*/5 * * * *", "TASK": "tests.app.tasks.add", "ARGS": [1, 2], "NAME": "sums"}]
    result = run(
        "-m", "aio_async", "--settings", "tests.settings", "periodic",
        AIO_ASYNC_TEST_SETTINGS=json.dumps({"PERIODIC": setting}),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    [listed] = json.loads(result.stdout)
    assert (listed["name"], listed["cron"], listed["task"], listed["timezone"]) == (
        "sums", "*/5 * * * *", "tests.app.tasks.add", "Europe/Paris",
    )  # fmt: skip
    next_tick = datetime.datetime.fromisoformat(listed["next_tick"])
    assert next_tick.minute % 5 == 0
    assert timezone.now() < next_tick <= timezone.now() + datetime.timedelta(minutes=5)
    assert listed["last_tick"] is None


#: Settings whose ``default`` database is an empty SQLite file: the queue is on ``queue``.
QUEUE_ALIAS_SETTINGS = """
from tests.settings import *  # noqa: F403

DATABASES = {{
    "default": {{"ENGINE": "django.db.backends.sqlite3", "NAME": {empty!r}}},
    "queue": DATABASES["default"],  # noqa: F405
}}
AIO_ASYNC = {{**AIO_ASYNC, "DATABASE": "queue"}}  # noqa: F405
"""


def test_the_command_line_reads_the_ticks_from_the_queue_database(tmp_path: Path) -> None:
    schedule = every("*/5 * * * *", "sums")
    tick = schedule.next_tick(timezone.now() - datetime.timedelta(minutes=10))
    assert fire(schedule, tick) is not None
    (tmp_path / "queue_alias_settings.py").write_text(
        QUEUE_ALIAS_SETTINGS.format(empty=str(tmp_path / "empty.sqlite3"))
    )
    setting = [{"CRON": "*/5 * * * *", "TASK": "tests.app.tasks.add", "ARGS": [1, 2], "NAME": "sums"}]
    result = run(
        "-m", "aio_async", "--settings", "queue_alias_settings", "periodic",
        AIO_ASYNC_TEST_SETTINGS=json.dumps({"PERIODIC": setting}),
        PYTHONPATH=os.pathsep.join([str(ROOT), str(tmp_path)]),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    [listed] = json.loads(result.stdout)
    assert listed["name"] == "sums"
    assert listed["last_tick"] == tick.astimezone(PARIS).isoformat()


def test_a_month_without_workers_costs_only_the_ticks_replayed() -> None:
    schedule = every("* * * * * *", replay=2)
    t0 = timezone.now().replace(microsecond=0) - datetime.timedelta(days=30)
    assert fire(schedule, t0) is not None
    now = timezone.now()
    made = PeriodicRunner([schedule]).start(now)  # walks back two ticks, not 2.6 million forward
    ticks = sorted(Job.objects.filter(pk__in=made).values_list("meta__tick", flat=True))
    assert len(ticks) == 2
    assert datetime.datetime.fromisoformat(ticks[-1]) <= now


def test_a_worker_refuses_to_start_with_a_schedule_whose_task_does_not_import() -> None:
    setting = [{"CRON": "* * * * *", "TASK": "tests.app.tasks.nowhere", "NAME": "lost"}]
    result = run(
        "-m", "aio_async", "--settings", "tests.settings", "run",
        AIO_ASYNC_TEST_SETTINGS=json.dumps({"PERIODIC": setting}),
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    # Its only line but the one that names the settings and the database it uses:
    [line] = [
        line for line in result.stderr.strip().splitlines() if "aio_async.cli: Using settings" not in line
    ]
    assert line.startswith("aio_async: configuration error: periodic schedule 'lost': "), line
    assert "tests.app.tasks.nowhere" in line

"""Periodic jobs with real worker processes: three of them, one job per tick."""

from __future__ import annotations

import datetime
import itertools
import time

import pytest
from django.db import connection

from aio_async.models import Job, Tick
from tests.acceptance.workers import Worker, environment

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.postgres_only]

EVERY_SECOND = [{"CRON": "* * * * * *", "TASK": "tests.app.tasks.add", "ARGS": [1, 2], "NAME": "second"}]


def test_three_workers_on_a_one_second_schedule_make_one_job_per_tick() -> None:
    env = environment(str(connection.settings_dict["NAME"]), {"PERIODIC": EVERY_SECOND, "POLL_INTERVAL": 0.2})
    with Worker(env, "--processes", "3") as supervisor:
        deadline = time.monotonic() + 60
        while supervisor.output.count("started on queues") < 3 and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(10)
        assert supervisor.stop() == 0, supervisor.output
        output = supervisor.output
    ticks = list(Tick.objects.filter(schedule="second").order_by("at"))
    seconds = [tick.at for tick in ticks]
    # Ten seconds of ticks, none missing after the first, none twice (the unique index), each
    # with its one job.
    assert len(ticks) >= 9, output
    assert all(
        later - earlier == datetime.timedelta(seconds=1) for earlier, later in itertools.pairwise(seconds)
    )
    assert all(tick.job_id is not None for tick in ticks)
    jobs = Job.objects.filter(meta__periodic="second")
    assert jobs.count() == len(ticks)
    assert sorted(jobs.values_list("pk", flat=True)) == sorted(int(tick.job_id or 0) for tick in ticks)


def test_a_slow_job_that_does_not_overlap_never_runs_twice_at_once() -> None:
    slow = [
        {
            "CRON": "* * * * * *",
            "TASK": "tests.app.tasks.sleep_then_write",
            "ARGS": ["slow", 2.5],
            "NAME": "slow",
            "OVERLAP": False,
        }
    ]
    env = environment(str(connection.settings_dict["NAME"]), {"PERIODIC": slow, "POLL_INTERVAL": 0.2})
    with Worker(env, "--processes", "2", "--concurrency", "4") as supervisor:
        deadline = time.monotonic() + 60
        while Job.objects.filter(meta__periodic="slow", status="succeeded").count() < 2:
            assert time.monotonic() < deadline, supervisor.output
            time.sleep(0.2)
        assert supervisor.stop() == 0, supervisor.output
    runs = list(Job.objects.filter(meta__periodic="slow").exclude(started=None).order_by("started"))
    assert len(runs) >= 2
    for earlier, later in itertools.pairwise(runs):
        assert earlier.finished is not None
        assert later.started is not None
        assert later.started >= earlier.finished  # one at a time, with free slots on both workers
    skipped = Tick.objects.filter(schedule="slow", job_id=None).count()
    assert skipped >= 2  # ticks came every second while a 2.5 s job ran

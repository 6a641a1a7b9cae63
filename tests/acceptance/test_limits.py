"""Limits across worker processes: three of them, ten slots each, one limit in the database."""

from __future__ import annotations

import datetime
import time

import pytest
from django.db import connection

from aio_async import schedule_many
from aio_async.models import Job
from tests.acceptance.workers import Worker, environment, wait_until
from tests.app import tasks
from tests.integration.test_limits import most_at_once, most_starts_in_a_second

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.postgres_only]


def from_timestamp(seconds: float) -> datetime.datetime:
    """A wall-clock time as an aware datetime."""
    return datetime.datetime.fromtimestamp(seconds, tz=datetime.UTC)


def run_three_workers(expected: int) -> str:
    """Three worker processes × concurrency 10 until ``expected`` jobs succeeded; their output."""
    env = environment(str(connection.settings_dict["NAME"]), {"POLL_INTERVAL": 0.1})
    with Worker(env, "--processes", "3", "--concurrency", "10") as supervisor:
        wait_until(lambda: supervisor.output.count("started on queues") == 3, 60, "three workers started")
        wait_until(lambda: Job.objects.filter(status="succeeded").count() == expected, 60, "every job done")
        assert supervisor.stop() == 0, supervisor.output
        return supervisor.output


def test_twenty_jobs_with_a_limit_of_two_never_run_more_than_two_at_once() -> None:
    schedule_many(
        tasks.sleep_then_write,
        [([f"k{n}", 0.5], {}) for n in range(20)],
        concurrency_key="api",
        concurrency_limit=2,
    )
    began = time.monotonic()
    output = run_three_workers(20)
    jobs = list(Job.objects.all())
    # Job.started and Job.finished bracket each run (the claim and the completion): the table
    # of what ran when, across the three processes.
    assert most_at_once(jobs) == 2, output
    assert time.monotonic() - began >= 20 * 0.5 / 2


def test_fifty_jobs_at_five_a_second_never_start_more_than_five_in_a_second() -> None:
    schedule_many(tasks.add, [([n, n], {}) for n in range(50)], rate="5/s")
    output = run_three_workers(50)
    jobs = list(Job.objects.all())
    # A job's start is its claim's time (Job.started), taken while its claimer holds the key.
    assert most_starts_in_a_second(jobs) == 5, output

"""stats(): per queue, depth now and throughput and pick-up latency over a window, on both databases.

Its cost follows the queued and running jobs and those of the window: on PostgreSQL, EXPLAIN
shows every part of it reading through an index, over a table of many finished jobs.
"""

from __future__ import annotations

import datetime
import re
from pathlib import Path
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.db import connection
from django.utils import timezone

import aio_async
from aio_async import InvalidOption, astats, schedule, stats
from aio_async.models import AttemptRecord, Job, Queue, Status
from aio_async.store import statements as sql
from aio_async.store.dialects import POSTGRESQL
from aio_async.values import Outcome
from tests.app import step_tasks, tasks

pytestmark = pytest.mark.django_db(transaction=True)


def job(queue: str = "a", status: str = Status.QUEUED, **fields: Any) -> Job:
    """A job row as a worker would have left it (the figures read rows, however they were written)."""
    made = schedule(tasks.add, [1, 2], queue=queue)
    Job.objects.filter(pk=made.pk).update(status=status, **fields)
    return made


#: The moment each test's ``ago()`` counts back from: one per test, so that two moments a
#: second apart are a second apart however long the writes between them took.
_MOMENT: list[datetime.datetime] = []


@pytest.fixture(autouse=True)
def _one_moment() -> None:
    _MOMENT[:] = [timezone.now()]


def ago(seconds: float) -> datetime.datetime:
    return _MOMENT[0] - datetime.timedelta(seconds=seconds)


def test_stats_count_each_queue_and_measure_its_window() -> None:
    job(run_after=ago(10))
    job(run_after=ago(5))
    job(run_after=ago(-3600))  # due in an hour
    job(status=Status.WAITING)
    job(status=Status.RUNNING, run_after=ago(3), started=ago(2), locked_by="w")  # waited 1.0 s
    job(status=Status.SUSPENDED, run_after=ago(-600))  # in a durable sleep, for ten minutes more
    for waited in (0.1, 0.2, 0.3):
        job(
            status=Status.SUCCEEDED,
            run_after=ago(30),
            started=ago(30 - waited),
            finished=ago(20),
            locked_by="w",
        )
    old = job(
        status=Status.SUCCEEDED, run_after=ago(7300), started=ago(7200), finished=ago(7200), locked_by="w"
    )
    job(status=Status.FAILED, run_after=ago(40), started=ago(38), finished=ago(37), locked_by="w")  # 2.0 s
    job(status=Status.CANCELLED, finished=ago(1))  # cancelled jobs are not counted
    AttemptRecord.objects.create(
        job=old, number=1, due=ago(50), started=ago(45), ended=ago(44), worker="w", outcome="retried"
    )  # 5.0 s
    AttemptRecord.objects.create(
        job=old, number=2, due=ago(8000), started=ago(7900), ended=ago(7800), worker="w", outcome="lost"
    )  # before the window
    job(queue="b", status=Status.SUCCEEDED, run_after=ago(9), started=ago(9), finished=ago(8), locked_by="w")
    Queue.objects.create(name="b", paused=True)

    report = stats(60)

    assert report["window_seconds"] == 60
    assert list(report["queues"]) == ["a", "b"]
    a = report["queues"]["a"]
    counted = ("due", "scheduled", "waiting", "running", "suspended", "succeeded", "failed")
    assert {key: a[key] for key in counted} == {
        "due": 2,
        "scheduled": 1,
        "waiting": 1,
        "running": 1,
        "suspended": 1,
        "succeeded": 3,
        "failed": 1,
    }
    assert (a["requeued"], a["paused"], a["throughput_per_second"]) == (1, False, round(4 / 60, 3))
    assert 9.5 < a["oldest_due_age_seconds"] < 15
    # Six attempts started in the window: 0.1, 0.2, 0.3, 1.0, 2.0 and 5.0 s after they were due.
    assert a["pickup_latency_seconds"] == {"attempts": 6, "p50": 0.3, "p95": 5.0, "max": 5.0}
    b = report["queues"]["b"]
    assert (b["succeeded"], b["due"], b["paused"], b["oldest_due_age_seconds"]) == (1, 0, True, None)
    assert b["pickup_latency_seconds"] == {"attempts": 1, "p50": 0.0, "p95": 0.0, "max": 0.0}


def test_a_wider_window_takes_the_older_jobs_in() -> None:
    job(status=Status.SUCCEEDED, run_after=ago(600), started=ago(599), finished=ago(598), locked_by="w")
    assert "a" not in stats(60)["queues"]  # a queue with nothing in the window and nothing queued
    wide = stats(3600)["queues"]["a"]
    assert (wide["succeeded"], wide["pickup_latency_seconds"]["attempts"]) == (1, 1)
    assert wide["pickup_latency_seconds"]["max"] == 1.0


def test_an_empty_queue_has_no_figures() -> None:
    assert stats()["queues"] == {}


def test_the_figures_of_jobs_a_worker_ran() -> None:
    from tests.conftest import drain

    schedule(tasks.add, [1, 2])
    schedule(tasks.snooze_then_write, ["s", 1, 3600], max_attempts=1)
    drain()
    default = stats()["queues"]["default"]
    assert (default["succeeded"], default["requeued"], default["scheduled"]) == (1, 1, 1)
    assert default["pickup_latency_seconds"]["attempts"] == 2


def test_a_suspended_job_counts_apart_and_its_suspension_is_no_requeue() -> None:
    from tests.conftest import drain

    sleeper = schedule(step_tasks.sleep_between, ["s", 3600], queue="steps")
    waiter = schedule(step_tasks.wait_between, ["w", "stats-event", None], queue="steps")
    schedule(tasks.add, [1, 2], queue="steps", run_after=ago(-3600))
    assert drain(queues=("steps",)) == {Outcome.SUSPENDED: 2}
    assert AttemptRecord.objects.filter(job__in=[sleeper, waiter], outcome="suspended").count() == 2
    steps = stats()["queues"]["steps"]
    counted = ("due", "scheduled", "running", "suspended", "succeeded", "requeued")
    assert {key: steps[key] for key in counted} == {
        "due": 0,
        "scheduled": 1,  # the plain job due in an hour; the sleeper, due then too, is suspended
        "running": 0,
        "suspended": 2,
        "succeeded": 0,
        "requeued": 0,  # each attempt ended, but put nothing back in the queue
    }
    assert steps["pickup_latency_seconds"]["attempts"] == 2  # they did start, in the window
    aio_async.notify_event("stats-event", {"value": 1})
    assert drain(queues=("steps",)) == {Outcome.SUCCEEDED: 1}
    steps = stats()["queues"]["steps"]
    assert (steps["suspended"], steps["succeeded"]) == (1, 1)


def test_astats_is_stats_from_async_code() -> None:
    job()
    assert async_to_sync(astats)(30)["queues"]["a"]["due"] == 1


@pytest.mark.parametrize("window", [0, -5, "60", True, None, 8 * 86400])
def test_the_window_is_a_number_of_seconds_up_to_a_week(window: object) -> None:
    with pytest.raises(InvalidOption, match="window must be a number of seconds above 0"):
        stats(window)  # type: ignore[arg-type]


def _plan(statement: str, params: list[Any]) -> str:
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN " + statement, params)
        return "\n".join(row[0] for row in cursor.fetchall())


@pytest.mark.postgres_only
def test_the_figures_read_through_indexes_not_the_finished_history() -> None:
    with connection.cursor() as cursor:
        # 60,000 finished jobs, long ago, and a few unfinished ones.
        cursor.execute(
            "INSERT INTO aio_async_job (name, args, kwargs, meta, identity, queue, priority, status, added, "
            "run_after, started, finished, attempts, excused, max_attempts, isolated, locked_by, "
            "unique_states, awaited, has_dependents) "
            "SELECT 'tests.app.tasks.add', '[]', '{}', '{}', 'x', 'q' || (n % 5), 5, "
            "CASE WHEN n % 10 = 0 THEN 'failed' WHEN n % 10 = 1 THEN 'cancelled' ELSE 'succeeded' END, "
            "now() - interval '2 days', now() - interval '2 days', now() - interval '2 days', "
            "now() - interval '2 days', 1, 0, 5, false, 'w', '', false, false "
            "FROM generate_series(1, 60000) AS n"
        )
        cursor.execute(
            "INSERT INTO aio_async_attempt (job_id, number, due, started, ended, worker, outcome) "
            "SELECT id, 1, run_after, started, finished, 'w', 'retried' FROM aio_async_job"
        )
    for _ in range(5):
        job(run_after=ago(1))
    job(status=Status.RUNNING, started=ago(1), locked_by="w")
    job(status=Status.SUSPENDED, run_after=ago(-3600))
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE aio_async_job")
        cursor.execute("ANALYZE aio_async_attempt")
    now, since = timezone.now(), ago(60)
    counts = _plan(sql.queue_counts(POSTGRESQL), [now, now, now, since, since, since])
    latencies = _plan(sql.pickup_latencies(POSTGRESQL), [since] * 8)
    for plan in (counts, latencies):
        assert "Seq Scan" not in plan, plan
    for index in (
        "aio_async_job_pending",
        "aio_async_job_lease",
        "aio_async_job_suspended",
        "aio_async_job_succeeded",
        "aio_async_job_failed",
        "aio_async_attempt_ended",
    ):
        assert index in counts, counts
        # Latencies read started attempts; a suspended job's are in its attempt records.
        assert index in ("aio_async_job_pending", "aio_async_job_suspended") or index in latencies, latencies
    assert stats()["queues"]["a"]["due"] == 5


def test_the_api_table_and_the_operating_page_name_every_key_stats_returns() -> None:
    job()
    report = stats()
    queue = report["queues"]["a"]
    keys = {*report, *queue, *queue["pickup_latency_seconds"]}
    root = Path(__file__).resolve().parents[2]
    table = (root / "docs" / "api.md").read_text().splitlines()
    [row] = [line for line in table if line.startswith("| `stats(")]
    operating = (root / "docs" / "operating.md").read_text()
    section = operating[operating.index("## Throughput, latency and depth") : operating.index("## Health")]
    assert keys - {"time", "window_seconds", "queues"} - set(re.findall(r"`(\w+)`", row)) == set()
    assert keys - set(re.findall(r'"(\w+)"', section)) == set()

"""The worker loop: waking, stopping, releasing, and the helpers built on it."""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from asgiref.sync import sync_to_async
from django.db import connection
from django.utils import timezone

from aio_async import aschedule, health, schedule, testing
from aio_async.executor import Executor
from aio_async.models import Error, Job, Status
from aio_async.values import Attempt, Outcome
from aio_async.worker.threads import open_store
from tests.app import tasks
from tests.app.models import Record
from tests.conftest import queue_settings, until


async def wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> None:  # noqa: ASYNC109
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await sync_to_async(predicate)():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not met in time")


@pytest.mark.postgres_only
@pytest.mark.psycopg3
@pytest.mark.django_db(transaction=True)
async def test_an_idle_worker_wakes_on_notify_not_on_its_poll() -> None:
    settings = queue_settings(poll_interval=60)
    store = open_store(settings, "notified")
    claims: list[int] = []
    claim = store.claim

    async def counted(
        limit: int, *, alone: bool, paused: frozenset[str] = frozenset(), thorough: bool = False
    ) -> list[Attempt]:
        claimed = await claim(limit, alone=alone, paused=paused, thorough=thorough)
        claims.append(len(claimed))
        return claimed

    store.claim = counted  # type: ignore[method-assign]
    executor = Executor(settings=settings, worker_id="notified", store=store)
    running = asyncio.create_task(executor.run())
    # Observed, not assumed: the worker has claimed (nothing) and is listening.
    await wait_for(lambda: bool(claims) and not any(claims) and listening())
    await aschedule(tasks.write, ["woken"])
    # Its next poll is a minute away: only the NOTIFY can have woken it.
    await wait_for(lambda: Record.objects.filter(key="woken").exists(), timeout=10)
    executor.stop()
    assert (await running)[Outcome.SUCCEEDED] == 1
    assert claims.count(1) == 1


def listening() -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'LISTEN aio_async;%'")
        return bool(cursor.fetchone()[0])


@pytest.mark.django_db(transaction=True)
async def test_stop_lets_running_sync_jobs_finish(tmp_path: Path) -> None:
    executor = Executor(settings=queue_settings(shutdown_timeout=10))
    running = asyncio.create_task(executor.run())
    marker = tmp_path / "started"
    await aschedule(tasks.mark_then_sleep, ["slow", 0.5, str(marker)])
    await wait_for(marker.exists)  # running, not just claimed
    executor.stop()
    outcomes = await running
    assert outcomes == {Outcome.SUCCEEDED: 1}
    assert await Record.objects.filter(key="slow").aexists()


@pytest.mark.django_db(transaction=True)
async def test_coroutine_jobs_past_the_shutdown_timeout_are_released_without_losing_an_attempt() -> None:
    executor = Executor(settings=queue_settings(shutdown_timeout=0.2))
    running = asyncio.create_task(executor.run())
    job = await aschedule(tasks.asleep, [30])
    await wait_for(lambda: Job.objects.filter(pk=job.pk, status=Status.RUNNING).exists())
    executor.stop()
    assert await running == {Outcome.RELEASED: 1}
    job = await Job.objects.aget(pk=job.pk)
    # The attempt stays counted (it is the fencing token) but is excused: it costs nothing.
    assert (job.status, job.attempts, job.excused, job.locked_by) == (Status.QUEUED, 1, 1, "")
    assert not await Error.objects.aexists()


@pytest.mark.django_db(transaction=True)
async def test_a_stopped_worker_claims_nothing_more() -> None:
    executor = Executor(settings=queue_settings())
    executor.stop()
    await aschedule(tasks.write, ["never run"])
    assert await executor.run() == {}
    assert await Job.objects.filter(status=Status.QUEUED).acount() == 1


@pytest.mark.django_db
def test_run_jobs_runs_due_jobs_inside_the_test_transaction() -> None:
    schedule(tasks.write, ["one"])
    schedule(tasks.awrite, ["two"])
    schedule(tasks.write_then_fail, ["three"], max_attempts=1)
    schedule(tasks.write, ["later"], run_after=__import__("datetime").timedelta(hours=1))
    assert testing.run_jobs() == {"succeeded": 2, "failed": 1}
    assert set(Record.objects.values_list("key", flat=True)) == {"one", "two"}
    assert testing.clear_queue() == 4
    assert not Job.objects.exists()
    assert not Error.objects.exists()


@pytest.mark.django_db
def test_health_reports_counts_breakdown_and_estimate() -> None:
    schedule(tasks.write, ["a"])
    schedule(tasks.write, ["b"])
    schedule(tasks.write_then_fail, ["c"], max_attempts=1)
    cancelled = schedule(tasks.add, [1, 1])
    Job.objects.filter(pk=cancelled.pk).update(status=Status.CANCELLED)
    report = health()
    assert report["all"] == 4
    assert report["remaining"] == 3
    assert report["executed"] == 0
    assert report["oldest_due_age_seconds"] >= 0
    assert report["estimated_completion_seconds"] is None  # nothing ran yet: no rate
    testing.run_jobs()
    report = health()
    assert (report["executed"], report["failed"], report["cancelled"], report["remaining"]) == (2, 1, 1, 0)
    assert report["errors"] == 1
    assert report["by_name"]["tests.app.tasks.write"] == {
        "all": 2,
        "executed": 2,
        "remaining": 0,
        "failed": 0,
        "cancelled": 0,
        "errors": 0,
    }
    assert report["by_name"]["tests.app.tasks.write_then_fail"]["errors"] == 1
    assert report["most_recent_executed"]["name"] == "tests.app.tasks.write"
    assert report["executed_per_second"] > 0
    assert report["estimated_completion_seconds"] == 0.0
    assert report["oldest_due_age_seconds"] is None
    import json

    json.dumps(report)  # JSON-ready


@pytest.mark.django_db
def test_health_counts_each_job_once_however_many_errors_it_has_and_reports_unknown_states() -> None:
    jobs = [schedule(tasks.write_then_fail, [f"f{n}"], max_attempts=2) for n in range(5)]
    for _ in range(2):
        Job.objects.update(run_after=timezone.now())
        testing.run_jobs()
    assert Error.objects.count() == 10  # two per job
    Job.objects.create(name="tests.app.tasks.write", status="bogus", identity="x")
    report = health()
    assert (report["failed"], report["errors"], report["unknown_status"]) == (5, 10, 1)
    by_name = report["by_name"]["tests.app.tasks.write_then_fail"]
    assert (by_name["all"], by_name["failed"], by_name["errors"]) == (len(jobs), 5, 10)


@pytest.mark.django_db(transaction=True)
async def test_a_worker_logs_each_job_at_debug_and_a_summary_at_info_every_interval(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, "aio_async")
    for key in ("a", "b", "c"):
        await aschedule(tasks.write, [key])
    await aschedule(tasks.write, ["mailed"], queue="mail")
    await aschedule(tasks.write_then_fail, ["broken"], queue="mail", max_attempts=1)
    executor = Executor(settings=queue_settings(queues=("default", "mail"), log_summary_interval=0.3))
    running = asyncio.create_task(executor.run())

    def summaries() -> list[logging.LogRecord]:
        return [record for record in caplog.records if getattr(record, "action", None) == "worker_summary"]

    def summed(key: str) -> collections.Counter[str]:
        return sum(
            (collections.Counter(getattr(record, key)) for record in summaries()), collections.Counter()
        )

    await until(lambda: summed("outcomes") == {"succeeded": 4, "failed": 1})
    # And a period in which nothing ended says so.
    await until(lambda: "no job ended" in summaries()[-1].getMessage())
    executor.stop()
    await running
    assert all(record.levelno == logging.INFO for record in summaries())
    assert all(record.seconds >= 0.29 for record in summaries())  # type: ignore[attr-defined]
    queues: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for record in summaries():
        for queue, counted in record.queues.items():  # type: ignore[attr-defined]
            queues[queue].update(counted)
    assert queues == {"default": {"succeeded": 3}, "mail": {"succeeded": 1, "failed": 1}}
    [told] = [record for record in summaries() if "failed" in record.outcomes]  # type: ignore[attr-defined]
    assert "1 failed" in told.getMessage()
    # How long after they were due the jobs were claimed: the median of a sample, and the longest.
    assert sum(record.claimed for record in summaries()) == 5  # type: ignore[attr-defined]
    claiming = [record for record in summaries() if record.claimed]  # type: ignore[attr-defined]
    for record in claiming:
        assert 0 <= record.pickup_median <= record.pickup_max < 30  # type: ignore[attr-defined]
        assert "s after they were due (median)" in record.getMessage()
    assert all(record.pickup_median is None for record in summaries() if not record.claimed)  # type: ignore[attr-defined]
    # One line per job: a success at DEBUG, a failure for good at ERROR.
    ended = {
        record.job_name.rsplit(".", 1)[1] + ":" + record.outcome: record.levelno  # type: ignore[attr-defined]
        for record in caplog.records
        if getattr(record, "action", None) == "job_finished"
    }
    assert ended == {"write:succeeded": logging.DEBUG, "write_then_fail:failed": logging.ERROR}

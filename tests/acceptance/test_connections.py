"""Connection hygiene: a bounded number of connections, no growth, broken ones replaced."""

from __future__ import annotations

import threading
import time

import pytest
from django.db import OperationalError, connection
from django.db.models import Count

from aio_async.api import job_maker
from aio_async.models import Job, Status
from tests.acceptance.workers import Worker, environment, wait_until
from tests.app import tasks
from tests.app.models import Record

pytestmark = [pytest.mark.postgres_only, pytest.mark.django_db(transaction=True)]

CONCURRENCY = 4
JOBS = 5000
APPLICATION = "aio-async-hygiene-test"


def worker_connections() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", [APPLICATION])
        row = cursor.fetchone()
    return int(row[0]) if row else 0


def test_connections_stay_bounded_do_not_grow_and_broken_ones_are_replaced() -> None:
    write, awrite = job_maker(tasks.write, max_attempts=10), job_maker(tasks.awrite, max_attempts=10)
    Job.objects.bulk_create((write if index % 2 else awrite)([f"c{index}"], None) for index in range(JOBS))
    env = environment(
        str(connection.settings_dict["NAME"]),
        {"LEASE_SECONDS": 3, "RESCUE_INTERVAL": 0.5},
        AIO_ASYNC_TEST_CONN_MAX_AGE="600",
        AIO_ASYNC_TEST_APPLICATION_NAME=APPLICATION,
    )
    samples: list[tuple[float, int, int]] = []  # (time, jobs done, connections)
    terminated = [float("inf")]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            try:
                done = Job.objects.filter(status=Status.SUCCEEDED).count()
                samples.append((time.monotonic(), done, worker_connections()))
            except OperationalError:  # terminated too, with the worker's connections
                connection.close()
            time.sleep(0.02)
        connection.close()

    with Worker(env, "--concurrency", str(CONCURRENCY)) as worker:
        sampler = threading.Thread(target=sample)
        sampler.start()
        try:
            wait_until(lambda: Job.objects.filter(status=Status.SUCCEEDED).count() >= JOBS // 2, timeout=120)
            with connection.cursor() as cursor:  # every worker connection is killed under it
                cursor.execute(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE application_name = %s",
                    [APPLICATION],
                )
            terminated[0] = time.monotonic()
            wait_until(lambda: Job.objects.filter(status=Status.SUCCEEDED).count() == JOBS, timeout=180)
            time.sleep(0.5)
        finally:
            stop.set()
            sampler.join()
        assert worker.alive(), worker.output
        assert worker.stop() == 0
    # One per job thread, one for claims and leases, one for attempts' ends, one LISTEN, one
    # for the async ORM. For a
    # few seconds after the kill, dying backends and their replacements are both listed: skip them.
    steady = [(done, count) for at, done, count in samples if not terminated[0] <= at < terminated[0] + 5]
    peak = max(count for _, count in steady)
    assert peak <= CONCURRENCY + 4, [
        (round(at - terminated[0], 2), done, count) for at, done, count in samples if count > CONCURRENCY + 4
    ]
    early = max(count for done, count in steady if done < JOBS // 2)
    late = max(count for done, count in steady if done >= JOBS * 3 // 4)
    # Not grown: as many as early on at most, and never past the bound.
    assert late <= max(early, CONCURRENCY + 4), (early, late)
    # Sync jobs commit their row with their completion: exactly once. Coroutine jobs are
    # at-least-once (their row commits before their completion), so only none may be missing.
    counts = dict(Record.objects.values_list("key").annotate(n=Count("pk")))
    assert sorted(counts) == sorted(f"c{index}" for index in range(JOBS))
    assert {counts[f"c{index}"] for index in range(1, JOBS, 2)} == {1}
    print(f"peak connections {peak} at concurrency {CONCURRENCY}; early {early}, late {late}")

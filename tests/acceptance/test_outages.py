"""The database goes away and comes back: the worker logs, backs off, reconnects, finishes.

These run against a throw-away PostgreSQL cluster on a free port, so that stopping it does
not disturb the rest of the suite.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator

import psycopg
import pytest

from tests.acceptance.scratch import ScratchCluster
from tests.acceptance.workers import ROOT, Worker, environment, wait_until

pytestmark = pytest.mark.postgres_only

SETTINGS = {"LEASE_SECONDS": 2, "HEARTBEAT_INTERVAL": 0.5, "RESCUE_INTERVAL": 0.5, "POLL_INTERVAL": 0.2}


@pytest.fixture(scope="module")
def cluster() -> Iterator[ScratchCluster]:
    scratch = ScratchCluster()
    try:
        yield scratch
    finally:
        scratch.destroy()


@pytest.fixture
def env(cluster: ScratchCluster) -> dict[str, str]:
    env = environment("aio_async", SETTINGS, AIO_ASYNC_TEST_DB="postgresql", PGPORT=str(cluster.port))
    subprocess.run(
        [sys.executable, "-m", "django", "migrate", "--settings", "tests.settings", "-v", "0"],
        cwd=ROOT,
        env=env,
        check=True,
    )
    with psycopg.connect(cluster.dsn(), autocommit=True) as db:
        db.execute("TRUNCATE aio_async_error, aio_async_job, app_record CASCADE")
    return env


def schedule_jobs(env: dict[str, str], count: int, seconds: float) -> None:
    subprocess.run(
        [sys.executable, "-m", "tests.acceptance.jobctl", "schedule", str(count), str(seconds)],
        cwd=ROOT,
        env={**env, "DJANGO_SETTINGS_MODULE": "tests.settings"},
        check=True,
    )


def succeeded(cluster: ScratchCluster) -> int:
    try:
        with psycopg.connect(cluster.dsn(), connect_timeout=2) as db:
            row = db.execute("SELECT count(*) FROM aio_async_job WHERE status = 'succeeded'").fetchone()
    except psycopg.OperationalError:
        return -1
    return int(row[0]) if row else 0


def record_keys(cluster: ScratchCluster) -> list[tuple[str, int]]:
    with psycopg.connect(cluster.dsn()) as db:
        return [
            (str(key), int(count))
            for key, count in db.execute("SELECT key, count(*) FROM app_record GROUP BY key").fetchall()
        ]


def test_a_worker_survives_a_database_restart_and_finishes_every_job_once(
    cluster: ScratchCluster, env: dict[str, str]
) -> None:
    schedule_jobs(env, 300, 0.01)
    with Worker(env, "--concurrency", "4") as worker:
        wait_until(lambda: succeeded(cluster) >= 50, message="50 jobs before the restart")
        cluster.stop()
        time.sleep(3)
        assert worker.alive(), worker.output
        cluster.start()
        wait_until(lambda: succeeded(cluster) == 300, timeout=90, message="every job after the restart")
        assert worker.alive()
        output = worker.output
        assert worker.stop() == 0, output
    assert "Lost the LISTEN connection" in output
    # Backing off, not spinning: a handful of failed claims over a 3 s outage.
    assert output.count("Cannot claim jobs") <= 12, output
    counts = dict(record_keys(cluster))
    assert sorted(counts) == sorted(f"job-{index}" for index in range(300))
    assert set(counts.values()) == {1}


def test_a_worker_started_while_the_database_is_down_waits_for_it(
    cluster: ScratchCluster, env: dict[str, str]
) -> None:
    cluster.stop()
    try:
        with Worker(env, "--concurrency", "2") as worker:
            wait_until(lambda: "Cannot claim jobs" in worker.output, message="a clear log line")
            time.sleep(1)
            assert worker.alive(), worker.output
            assert "Traceback" not in worker.output
            cluster.start()
            schedule_jobs(env, 5, 0)
            wait_until(lambda: succeeded(cluster) == 5, timeout=60, message="jobs after the database came up")
            assert worker.stop() == 0
    finally:
        if succeeded(cluster) < 0:
            cluster.start()


def test_a_worker_short_of_connections_runs_fewer_jobs_and_charges_none_of_them() -> None:
    # The worker connects as an ordinary role; the test keeps the superuser's reserved slots.
    small = ScratchCluster(max_connections=17, superuser_reserved_connections=3)
    try:
        with psycopg.connect(small.dsn(), autocommit=True) as db:
            db.execute("CREATE ROLE worker LOGIN")
            db.execute("ALTER DATABASE aio_async OWNER TO worker")
        env = environment(
            "aio_async", SETTINGS, AIO_ASYNC_TEST_DB="postgresql", PGPORT=str(small.port), PGUSER="worker"
        )
        subprocess.run(
            [sys.executable, "-m", "django", "migrate", "--settings", "tests.settings", "-v", "0"],
            cwd=ROOT,
            env=env,
            check=True,
        )
        schedule_jobs(env, 200, 0.05)
        with psycopg.connect(small.dsn(), autocommit=True) as db:
            db.execute("UPDATE aio_async_job SET max_attempts = 1")  # a charged attempt would fail a job
        with Worker(env, "--concurrency", "30") as worker:
            wait_until(lambda: succeeded(small) == 200, timeout=120, message="every job")
            output = worker.output
            assert worker.stop() == 0, output
        # It said once, plainly, what it needs and what the server allows, and once that it is short.
        assert output.count("needs up to 34 database connections") == 1, output
        assert output.count("cannot connect to the database") == 1, output
        with psycopg.connect(small.dsn()) as db:
            errors = db.execute("SELECT exception, message FROM aio_async_error").fetchall()
        assert errors == []  # no job was charged for the server's limit, none recorded as lost
        assert set(dict(record_keys(small)).values()) == {1}
    finally:
        small.destroy()

"""The database goes away and comes back: the worker logs, backs off, reconnects, finishes.

These run against a throw-away PostgreSQL cluster on a free port, so that stopping it does
not disturb the rest of the suite.
"""

from __future__ import annotations

import datetime
import json
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


@pytest.mark.parametrize("listen", [True, False], ids=["listen", "poll"])
def test_a_worker_claims_within_a_second_of_its_database_coming_back_however_long_its_back_off(
    cluster: ScratchCluster, env: dict[str, str], listen: bool
) -> None:
    # The default poll interval, so the default back-off: claims retried 2, 4, 8, 16, 30 s apart.
    env = {**env, "AIO_ASYNC_TEST_SETTINGS": json.dumps({"POLL_INTERVAL": 1.0, "LISTEN": listen})}
    with (
        subprocess.Popen(
            [sys.executable, "-m", "tests.acceptance.jobctl", "serve"],
            cwd=ROOT,
            env={**env, "DJANGO_SETTINGS_MODULE": "tests.settings"},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        ) as scheduler,
        Worker(env) as worker,
    ):
        lines, ids = scheduler.stdin, scheduler.stdout
        assert lines is not None
        assert ids is not None

        def enqueue(key: str) -> int:
            lines.write(key + "\n")
            lines.flush()
            return int(ids.readline())

        enqueue("before")
        wait_until(lambda: succeeded(cluster) == 1, message="a job before the outage")
        cluster.stop()
        try:
            # The database comes back early in the 8 s wait after the third failed claim.
            wait_until(lambda: backing_off(worker.output, 8.0), timeout=30, message="an 8 s back-off")
        finally:
            cluster.start()
        restarted = datetime.datetime.now(datetime.UTC)
        job_id = enqueue("after")
        wait_until(lambda: started(cluster, job_id) is not None, timeout=30, message="the job after")
        latency = (started(cluster, job_id) - restarted).total_seconds()  # type: ignore[operator]
        print(f"claimed {latency:.3f} s after the database came back")  # the measure, shown with -s
        assert latency < 3.0, worker.output
        output = worker.output
        assert worker.stop() == 0, output
    assert "The database answers again" in output or "Lost the LISTEN connection" in output
    assert "Traceback" not in output


def backing_off(output: str, seconds: float) -> bool:
    """Whether the worker said that it waits ``seconds`` after a failed claim."""
    return any(
        "Cannot claim jobs" in line and f"in {seconds:.1f} s at most" in line for line in output.splitlines()
    )


def started(cluster: ScratchCluster, job_id: int) -> datetime.datetime | None:
    with psycopg.connect(cluster.dsn(), connect_timeout=2) as db:
        row = db.execute("SELECT started FROM aio_async_job WHERE id = %s", [job_id]).fetchone()
    return row[0] if row else None


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

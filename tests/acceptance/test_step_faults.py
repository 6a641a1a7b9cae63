"""Durable steps under real faults: a worker killed inside a step, a worker stopped past its lease.

Each step's database effect must exist exactly once, and no committed step may run again.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
from django.db import connection
from django.db.models import Count

from aio_async import schedule
from aio_async.models import Job, Status, Step
from tests.acceptance.workers import Worker, environment, wait_until
from tests.app import step_tasks
from tests.app.models import Record

pytestmark = pytest.mark.django_db(transaction=True)

SHORT_LEASE = {"LEASE_SECONDS": 1.5, "HEARTBEAT_INTERVAL": 0.3, "RESCUE_INTERVAL": 0.3, "POLL_INTERVAL": 0.05}


def env(**extra: str) -> dict[str, str]:
    return environment(str(connection.settings_dict["NAME"]), SHORT_LEASE, **extra)


def records() -> dict[str, int]:
    return dict(Record.objects.values_list("key").annotate(n=Count("pk")).values_list("key", "n"))


def test_a_worker_killed_inside_step_two_leaves_each_steps_effect_exactly_once(tmp_path: Path) -> None:
    rounds = 8
    jobs = [
        schedule(step_tasks.kill_in_step, [f"k{index}", str(tmp_path)], max_attempts=5)
        for index in range(rounds)
    ]
    kills = 0
    for _ in range(rounds * 3):
        if Job.objects.filter(status=Status.SUCCEEDED).count() == rounds:
            break
        with Worker(env(KILL_ATTEMPTS="1"), "--concurrency", "1") as worker:
            wait_until(
                lambda: not worker.alive() or Job.objects.filter(status=Status.SUCCEEDED).count() == rounds
            )
            if not worker.alive():
                kills += worker.process.returncode == -signal.SIGKILL
            else:
                assert worker.stop() == 0
    assert kills == rounds  # each job killed its worker once, inside step two
    assert Job.objects.filter(status=Status.SUCCEEDED).count() == rounds
    counts = records()
    for index, job in enumerate(jobs):
        key = f"k{index}"
        assert (counts[f"{key}-1"], counts[f"{key}-2"], counts[f"{key}-3"]) == (1, 1, 1)
        job.refresh_from_db()
        assert job.attempts == 2
        steps = dict(Step.objects.filter(job=job).values_list("name", "attempt"))
        assert steps == {"one": 1, "two": 2, "three": 2}  # step one ran in the first attempt only
        assert Path(tmp_path, f"{key}.1").exists()  # step two did run in the killed attempt
    print(f"workers killed inside a step: {kills}; each step's effect exactly once")


@pytest.mark.postgres_only
def test_a_step_stalled_past_its_lease_cannot_commit_after_another_worker_finished_the_job(
    tmp_path: Path,
) -> None:
    job = schedule(step_tasks.pause_in_step, ["st", str(tmp_path)], max_attempts=5)
    with Worker(env(STEP_PAUSE="3"), "--concurrency", "1") as first:
        wait_until(lambda: Path(tmp_path, "1.pid").exists(), message="step two of the first attempt")
        first.signal(signal.SIGSTOP)
        with Worker(env(STEP_PAUSE="0"), "--concurrency", "1") as second:
            wait_until(
                lambda: Job.objects.filter(pk=job.pk, status=Status.SUCCEEDED).exists(),
                message="the second worker's success",
            )
            first.signal(signal.SIGCONT)
            wait_until(
                lambda: "lost its lease" in first.output, timeout=15, message="the stalled step refused"
            )
            assert first.stop() == 0
            assert second.stop() == 0
    assert records() == {"st-1": 1, "st-2": 1, "st-3": 1}
    job.refresh_from_db()
    assert (job.status, job.attempts) == (Status.SUCCEEDED, 2)
    assert dict(Step.objects.filter(job=job).values_list("name", "attempt")) == {
        "one": 1,
        "two": 2,
        "three": 2,
    }


def test_a_durable_sleep_outlives_the_worker_that_began_it() -> None:
    job = schedule(step_tasks.sleep_between, ["nap", 2.0])
    began = time.monotonic()
    with Worker(env(), "--concurrency", "1") as first:
        wait_until(
            lambda: Job.objects.filter(pk=job.pk, status=Status.SUSPENDED).exists(), message="the sleep"
        )
        assert first.stop() == 0
    assert records() == {"nap-before": 1}
    with Worker(env(), "--concurrency", "1") as second:
        wait_until(
            lambda: Job.objects.filter(pk=job.pk, status=Status.SUCCEEDED).exists(), message="the wake-up"
        )
        assert second.stop() == 0
    assert time.monotonic() - began >= 2.0
    assert records() == {"nap-before": 1, "nap-after": 1}
    job.refresh_from_db()
    sleep = Step.objects.get(job=job, name="nap")
    assert sleep.until is not None
    assert job.started is not None
    assert job.started >= sleep.until  # it resumed after its sleep, not before

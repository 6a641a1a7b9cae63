"""Retention: finished jobs past their age go, with their errors, steps and groups; so do old events."""

from __future__ import annotations

import asyncio
import datetime
import json
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.core.exceptions import ImproperlyConfigured
from django.db import connection
from django.utils import timezone

from aio_async import schedule
from aio_async.executor import Executor
from aio_async.models import Error, Event, Group, Job, Status, Step, Tick
from aio_async.retention import Retention, parse_age
from aio_async.store import statements as sql
from aio_async.store.maintenance import prune
from aio_async.values import Outcome
from tests.acceptance.test_cli import run
from tests.app import step_tasks, tasks
from tests.conftest import drain, queue_settings

pytestmark = pytest.mark.django_db(transaction=True)


def finished(status: str, days: float, *, group: Any = None, errors: int = 0) -> Job:
    """A job that reached ``status`` ``days`` ago, with ``errors`` Error rows."""
    job = schedule(tasks.add, [1, 2], group=group)
    moment = timezone.now() - datetime.timedelta(days=days)
    Job.objects.filter(pk=job.pk).update(status=status, finished=moment)
    for attempt in range(1, errors + 1):
        Error.objects.create(job_id=job.pk, attempt=attempt, exception="ValueError", message="boom")
    return job


def left() -> set[int]:
    return set(Job.objects.values_list("pk", flat=True))


def test_each_state_goes_after_its_own_age_with_its_errors() -> None:
    old_done = finished(Status.SUCCEEDED, 8)
    new_done = finished(Status.SUCCEEDED, 6)
    old_failed = finished(Status.FAILED, 8, errors=3)
    old_cancelled = finished(Status.CANCELLED, 8)
    queued = schedule(tasks.add, [1, 2])
    Job.objects.filter(pk=queued.pk).update(added=timezone.now() - datetime.timedelta(days=30))
    counted = prune(Retention(succeeded=7 * 86400, failed=7 * 86400))
    assert counted == {"succeeded": 1, "failed": 1}
    assert left() == {new_done.pk, old_cancelled.pk, queued.pk}  # cancelled: kept for good
    assert not Error.objects.filter(job_id=old_failed.pk).exists()
    assert old_done.pk not in left()


def test_a_dry_run_counts_and_deletes_nothing() -> None:
    for _ in range(3):
        finished(Status.SUCCEEDED, 2)
    assert prune(Retention(succeeded=86400, cancelled=86400), dry_run=True) == {
        "succeeded": 3,
        "cancelled": 0,
    }
    assert Job.objects.count() == 3


def test_batches_go_until_nothing_is_left() -> None:
    for _ in range(7):
        finished(Status.SUCCEEDED, 2)
    assert prune(Retention(succeeded=86400), batch=2) == {"succeeded": 7}
    assert not Job.objects.exists()


def members(reference: str, count: int) -> list[Job]:
    """``count`` jobs of one new group (scheduled before any finishes: a group takes no member after)."""
    return [schedule(tasks.add, [1, index], group=reference) for index in range(count)]


def finish(job: Job, status: str, days: float) -> None:
    moment = timezone.now() - datetime.timedelta(days=days)
    Job.objects.filter(pk=job.pk).update(status=status, finished=moment)


def test_a_group_goes_only_once_every_member_is_past_its_age() -> None:
    recent, *others = members("mixed", 3)
    finish(recent, Status.SUCCEEDED, 1)
    for job in others:
        finish(job, Status.SUCCEEDED, 9)
    done, running = members("unfinished", 2)
    finish(done, Status.SUCCEEDED, 9)
    Job.objects.filter(pk=running.pk).update(status=Status.RUNNING)
    old = members("old", 3)
    Group.objects.get(reference="old").on_completion(old[2])  # the group's row names its final job
    finish(old[0], Status.SUCCEEDED, 9)
    finish(old[1], Status.FAILED, 9)
    Error.objects.create(job_id=old[1].pk, attempt=1, exception="ValueError", message="boom")
    finish(old[2], Status.SUCCEEDED, 8)
    counted = prune(Retention(succeeded=7 * 86400, failed=7 * 86400), batch=1)
    assert counted == {"succeeded": 2, "failed": 1}
    assert not Group.objects.filter(reference="old").exists()
    assert not Error.objects.exists()
    assert Job.objects.filter(group__reference="mixed").count() == 3  # one member is too recent
    assert Job.objects.filter(group__reference="unfinished").count() == 2  # one still runs


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("45s", 45), ("30m", 1800), ("12h", 43200), ("7d", 604800), ("2w", 1209600), ("90", 90), ("1.5h", 5400)],
)
def test_ages_are_read_in_their_units(text: str, seconds: float) -> None:
    assert parse_age(text, "age") == seconds


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"SUCCEEDED": "7 days"}, r"AIO_ASYNC\['RETENTION'\]\['SUCCEEDED'\] must be an age such as '7d'"),
        ({"SUCCEEDED": -1}, "must be an age"),
        ({"DONE": "7d"}, r"Unknown AIO_ASYNC\['RETENTION'\] keys \['DONE'\]"),
        ({"SUCCEEDED": "7d", "EVERY": "0.5s"}, "EVERY'] must be at least 1 second"),
        ("7d", "must be a dict"),
    ],
)
def test_a_bad_retention_setting_is_refused(raw: object, message: str) -> None:
    with pytest.raises(ImproperlyConfigured, match=message):
        Retention.parse(raw)


async def test_a_worker_with_retention_prunes_when_it_starts() -> None:
    old = await sync_to_async(finished)(Status.SUCCEEDED, 3)
    executor = Executor(settings=queue_settings(retention=Retention(succeeded=86400)))
    running = asyncio.create_task(executor.run())
    try:
        for _ in range(200):
            if not await Job.objects.filter(pk=old.pk).aexists():
                break
            await asyncio.sleep(0.05)
        assert not await Job.objects.filter(pk=old.pk).aexists()
    finally:
        executor.stop()
        await running


def test_the_command_line_prunes_and_says_what_it_deleted() -> None:
    finished(Status.SUCCEEDED, 3)
    kept = finished(Status.FAILED, 3)
    dry = run("-m", "aio_async", "--settings", "tests.settings", "prune", "--succeeded", "2d", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert json.loads(dry.stdout) == {"would_delete": {"succeeded": 1}}
    assert Job.objects.count() == 2
    done = run("-m", "aio_async", "--settings", "tests.settings", "prune", "--succeeded", "2d")
    assert json.loads(done.stdout) == {"deleted": {"succeeded": 1}}
    assert left() == {kept.pk}
    managed = run("-m", "django", "prune_queue", "--failed", "1d", DJANGO_SETTINGS_MODULE="tests.settings")
    assert managed.returncode == 0, managed.stderr
    assert json.loads(managed.stdout) == {"deleted": {"failed": 1}}
    assert not Job.objects.exists()


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ([], "nothing to prune: give an age, such as --succeeded 7d"),
        (["--succeeded", "soon"], "--succeeded must be an age such as '7d'"),
    ],
)
def test_the_command_line_refuses_to_guess(arguments: list[str], message: str) -> None:
    finished(Status.SUCCEEDED, 3)
    result = run("-m", "aio_async", "--settings", "tests.settings", "prune", *arguments)
    assert result.returncode == 2
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert Job.objects.count() == 1


def test_old_periodic_ticks_go_but_each_schedules_latest() -> None:
    now = timezone.now()
    for name in ("a", "b"):
        for days in (30, 20, 10):
            Tick.objects.create(schedule=name, tick=f"{days}", at=now - datetime.timedelta(days=days))
    Tick.objects.create(schedule="a", tick="new", at=now)
    prune(Retention(succeeded=15 * 86400), batch=1)
    assert sorted(Tick.objects.values_list("schedule", "tick")) == [("a", "10"), ("a", "new"), ("b", "10")]


def test_a_pruned_jobs_steps_go_with_it() -> None:
    old = schedule(step_tasks.three_steps, ["old"])
    new = schedule(step_tasks.three_steps, ["new"])
    assert drain() == {Outcome.SUCCEEDED: 2}
    Job.objects.filter(pk=old.pk).update(finished=timezone.now() - datetime.timedelta(days=8))
    assert Step.objects.filter(job=old).count() == 3
    assert prune(Retention(succeeded=7 * 86400)) == {"succeeded": 1}
    assert left() == {new.pk}
    assert not Step.objects.filter(job_id=old.pk).exists()
    assert Step.objects.filter(job=new).count() == 3  # a kept job keeps its journal


def sent(key: str, days: float) -> Event:
    """An event sent ``days`` ago."""
    return Event.objects.create(key=key, sent=timezone.now() - datetime.timedelta(days=days))


def test_events_older_than_the_longest_kept_state_go() -> None:
    old, recent = sent("old", 10), sent("recent", 3)
    between = sent("between", 6)  # past the succeeded jobs' age, not the failed ones'
    prune(Retention(succeeded=5 * 86400, failed=7 * 86400), batch=1)
    assert set(Event.objects.values_list("pk", flat=True)) == {recent.pk, between.pk}
    assert old.pk not in set(Event.objects.values_list("pk", flat=True))


def test_an_event_an_unfinished_job_may_still_receive_is_kept() -> None:
    waiting = schedule(step_tasks.sleep_then_wait, ["kept", 3600, "order-9"])
    assert drain() == {Outcome.SUSPENDED: 1}  # it sleeps before it reaches its wait
    Job.objects.filter(pk=waiting.pk).update(added=timezone.now() - datetime.timedelta(days=20))
    before, since = sent("order-1", 30), sent("order-9", 15)  # sent before it, and since it was added
    prune(Retention(succeeded=7 * 86400))
    assert list(Event.objects.values_list("pk", flat=True)) == [since.pk]
    assert before.pk != since.pk
    Step.objects.filter(job=waiting, name="nap").update(until=timezone.now())  # its sleep is over
    Job.objects.filter(pk=waiting.pk).update(run_after=timezone.now())
    assert drain() == {Outcome.SUCCEEDED: 1}
    waiting.refresh_from_db()
    assert waiting.status == Status.SUCCEEDED
    prune(Retention(succeeded=7 * 86400))  # finished now: its event goes
    assert not Event.objects.exists()


def test_a_dry_run_deletes_no_event() -> None:
    sent("old", 30)
    prune(Retention(succeeded=86400), dry_run=True)
    assert Event.objects.count() == 1


@pytest.mark.postgres_only
def test_the_oldest_unfinished_job_is_read_through_indexes_not_the_finished_history() -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO aio_async_job (name, args, kwargs, meta, identity, queue, priority, status, added, "
            "run_after, finished, attempts, excused, max_attempts, isolated, locked_by, unique_states, "
            "awaited, has_dependents) "
            "SELECT 'tests.app.tasks.add', '[]', '{}', '{}', 'x', 'default', 5, 'succeeded', "
            "now() - interval '2 days', now() - interval '2 days', now() - interval '2 days', 1, 0, 5, "
            "false, 'w', '', false, false FROM generate_series(1, 30000)"
        )
        cursor.execute("ANALYZE aio_async_job")
        cursor.execute("EXPLAIN " + sql.oldest_unfinished())
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert "Seq Scan" not in plan, plan
    for index in ("pending", "lease", "unleased", "suspended"):
        assert f"aio_async_job_{index}" in plan, plan

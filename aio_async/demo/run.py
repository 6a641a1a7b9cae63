"""``python -m aio_async demo``: a few jobs on SQLite, run by a real worker, explained."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time

from django.db import transaction

from aio_async.api import schedule
from aio_async.conf import Backoff, get_settings
from aio_async.demo.models import Note
from aio_async.demo.tasks import flaky, greet, write_note
from aio_async.executor import Executor
from aio_async.models import FINISHED, Job

DEADLINE = 30.0


class _Rollback(Exception):
    """Raised to roll a transaction back on purpose."""


def _schedule_jobs() -> list[Job]:
    jobs = [
        write_note.schedule(["written by a sync job, committed with its completion"]),
        greet.schedule(["newcomer"]),
        flaky.schedule(["flaky-service"]),
    ]
    try:
        with transaction.atomic():
            schedule(write_note, ["this note must never exist"])
            raise _Rollback
    except _Rollback:
        pass
    return jobs


async def _run_until_done(executor: Executor, ids: list[int]) -> None:
    worker = asyncio.create_task(executor.run())
    started = time.monotonic()
    while time.monotonic() - started < DEADLINE:
        await asyncio.sleep(0.1)
        if await Job.objects.filter(pk__in=ids).exclude(status__in=FINISHED).aexists():
            continue
        break
    executor.stop()
    await worker


def demo() -> int:
    """Schedule the demo jobs, run a worker until they finish, print what happened."""
    Job.objects.filter(name__startswith="aio_async.demo.").delete()
    Note.objects.all().delete()
    print("Scheduling four jobs; the fourth is inside a transaction that rolls back.")
    jobs = _schedule_jobs()
    print(f"Jobs in the queue: {Job.objects.filter(name__startswith='aio_async.demo.').count()} (not 4)")
    # Quick retries so that the flaky job's three attempts take about a second.
    settings = dataclasses.replace(
        get_settings(), backoff=Backoff(base=0.2, jitter=0.0), poll_interval=0.1, concurrency=4
    )
    started = time.monotonic()
    # A line for every job, as -v 2 would show: a worker logs a success at DEBUG.
    job_lines = logging.getLogger("aio_async.jobs")
    level = job_lines.level
    if job_lines.getEffectiveLevel() == logging.INFO:
        job_lines.setLevel(logging.DEBUG)
    try:
        asyncio.run(_run_until_done(Executor(settings=settings), [job.pk for job in jobs]))
    finally:
        job_lines.setLevel(level)
    print(f"\nThe worker ran for {time.monotonic() - started:.1f} s. What happened:")
    for job in Job.objects.filter(pk__in=[job.pk for job in jobs]).order_by("pk"):
        print(
            f"  job {job.pk} {job.name}: {job.status} after {job.attempts} attempt(s); result {job.result!r}"
        )
        for error in job.errors.order_by("attempt"):
            print(f"      attempt {error.attempt} failed: {error.exception}: {error.message}")
    print(f"\nNotes in the database: {[note.text for note in Note.objects.order_by('pk')]}")
    done = all(job.status == "succeeded" for job in Job.objects.filter(pk__in=[job.pk for job in jobs]))
    print("All done." if done else "Some jobs did not finish; see above.")
    return 0 if done else 1

"""Concurrency and rate limits, per key and per queue, enforced by the claim."""

from __future__ import annotations

import asyncio
import datetime
import itertools
from collections.abc import Iterable
from typing import Any

import pytest
from django.db import connection
from django.test import override_settings
from django.utils import timezone

from aio_async import InvalidOption, schedule, schedule_many
from aio_async.conf import get_settings
from aio_async.executor import Executor
from aio_async.models import Job
from aio_async.store import statements as sql
from aio_async.store.dialects import POSTGRESQL
from aio_async.values import ClaimRequest, Outcome
from tests.app import tasks
from tests.conftest import queue_settings

pytestmark = pytest.mark.django_db(transaction=True)


def most_at_once(jobs: Iterable[Job]) -> int:
    """The most jobs that were running at one moment, from their started and finished times."""
    events = sorted(
        itertools.chain.from_iterable(((job.started, 1), (job.finished, -1)) for job in jobs),
        key=lambda event: (event[0], event[1]),  # an end before a start at the same instant
    )
    running = most = 0
    for _, change in events:
        running += change
        most = max(most, running)
    return most


def most_starts_in_a_second(jobs: Iterable[Job]) -> int:
    """The most jobs started within any one second (a window that opens at a start)."""
    starts = sorted(job.started for job in jobs if job.started is not None)
    second = datetime.timedelta(seconds=1)
    return max(sum(1 for other in starts if start <= other < start + second) for start in starts)


def run_all(expected: int, **overrides: object) -> dict[Outcome, int]:
    """Run a worker until ``expected`` jobs have succeeded (limits hold some back for a while)."""

    async def run() -> dict[Outcome, int]:
        executor = Executor(settings=queue_settings(poll_interval=0.05, **overrides))
        running = asyncio.create_task(executor.run())
        deadline = asyncio.get_running_loop().time() + 30
        while executor.outcomes[Outcome.SUCCEEDED] < expected:
            assert asyncio.get_running_loop().time() < deadline, executor.outcomes
            await asyncio.sleep(0.02)
        executor.stop()
        return dict(await running)

    return asyncio.run(run())


def test_no_more_than_the_limit_run_at_once_and_the_limit_is_used() -> None:
    jobs = schedule_many(
        tasks.asleep, [([0.3], {}) for _ in range(6)], concurrency_key="api", concurrency_limit=2
    )
    other = schedule(tasks.asleep, [0.3])  # no limits: runs beside them
    assert run_all(7) == {Outcome.SUCCEEDED: 7}
    limited = Job.objects.filter(pk__in=[job.pk for job in jobs])
    assert most_at_once(limited) == 2
    last = max(job.finished for job in limited if job.finished is not None)
    assert Job.objects.get(pk=other.pk).finished < last  # type: ignore[operator]


def test_a_key_made_from_the_arguments_limits_each_customer_apart() -> None:
    jobs = [tasks.sync_customer.schedule([customer, 0.3]) for customer in ("a", "a", "a", "b", "b", "b")]
    assert {job.limit_key for job in jobs} == {"customer:a", "customer:b"}
    run_all(6)
    found = Job.objects.filter(pk__in=[job.pk for job in jobs])
    assert most_at_once(found.filter(limit_key="customer:a")) == 1
    assert most_at_once(found.filter(limit_key="customer:b")) == 1
    assert most_at_once(found) == 2  # the two customers side by side


def test_a_rate_caps_the_starts_in_any_second() -> None:
    jobs = schedule_many(tasks.add, [([n, n], {}) for n in range(12)], rate="5/s")
    assert {job.limit_key for job in jobs} == {"task:tests.app.tasks.add"}
    began = timezone.now()
    run_all(12)
    found = list(Job.objects.filter(pk__in=[job.pk for job in jobs]))
    assert most_starts_in_a_second(found) == 5
    assert max(job.started for job in found if job.started is not None) - began >= datetime.timedelta(
        seconds=2
    )


def test_a_queue_limit_from_the_settings_holds_for_its_jobs_without_limits_of_their_own() -> None:
    with override_settings(AIO_ASYNC={**_test_settings(), "QUEUE_LIMITS": {"mail": {"CONCURRENCY": 1}}}):
        assert get_settings().queue_limits["mail"].concurrency == 1
        mail = [schedule(tasks.asleep, [0.2], queue="mail") for _ in range(3)]
        own = schedule(tasks.asleep, [0.2], queue="mail", concurrency_key="own", concurrency_limit=5)
        other = schedule(tasks.asleep, [0.2])
        run_all(5, queues=("default", "mail"))
    assert {job.limit_key for job in mail} == {"queue:mail"}
    assert (own.limit_key, other.limit_key) == ("own", None)
    assert most_at_once(Job.objects.filter(pk__in=[job.pk for job in mail])) == 1


def _test_settings() -> dict[str, object]:
    from django.conf import settings

    return dict(getattr(settings, "AIO_ASYNC", {}))


def test_a_calls_limits_override_its_tasks() -> None:
    job = tasks.limited.schedule([1], concurrency_limit=1)
    assert (job.limit_key, job.concurrency_limit, job.rate_count, job.rate_period) == ("shared", 1, 10, 60.0)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"concurrency_key": "k"}, "concurrency_key needs concurrency_limit, rate, or both"),
        ({"concurrency_limit": 0}, "concurrency_limit must be a whole number from 1"),
        ({"concurrency_limit": True}, "concurrency_limit must be a whole number from 1"),
        ({"rate": "5/x"}, "rate must be a number of starts per second, minute or hour"),
        ({"rate": "0/s"}, "rate must be a number of starts per second, minute or hour"),
        ({"rate": 5}, "rate must be a number of starts per second, minute or hour"),
        ({"concurrency_key": "", "concurrency_limit": 1}, "concurrency_key must be a non-empty string"),
        (
            {"concurrency_key": lambda a, b: 1 / 0, "concurrency_limit": 1},
            "concurrency_key raised ZeroDivisionError",
        ),
        ({"concurrency_key": lambda a, b: 7, "concurrency_limit": 1}, "the key concurrency_key made must be"),
    ],
)
def test_bad_limits_are_refused_and_write_nothing(options: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidOption, match=message):
        schedule(tasks.add, [1, 2], **options)  # type: ignore[arg-type]
    with pytest.raises(InvalidOption, match=message):
        schedule_many(tasks.add, [([1, 2], {})], **options)  # type: ignore[arg-type]
    assert not Job.objects.exists()


@pytest.mark.parametrize(
    ("queue_limits", "message"),
    [
        ({"mail": {"CONCURRENCY": 0}}, r"QUEUE_LIMITS'\]\['mail'\]: concurrency_limit|CONCURRENCY"),
        ({"mail": {"RATE": "fast"}}, "RATE"),
        ({"mail": {"SPEED": 1}}, "must be a dict with CONCURRENCY, RATE or both"),
        (["mail"], "must be a dict of queue names"),
    ],
)
def test_bad_queue_limits_are_a_configuration_error(queue_limits: object, message: str) -> None:
    from django.core.exceptions import ImproperlyConfigured

    from aio_async.conf import parse_settings

    with pytest.raises(ImproperlyConfigured, match=message):
        parse_settings({"QUEUE_LIMITS": queue_limits})


@pytest.mark.postgres_only
def test_the_claims_stay_index_scans_with_limits_in_use() -> None:
    schedule_many(tasks.add, [([n, n], {}) for n in range(300)])
    schedule_many(tasks.add, [([n, n], {}) for n in range(300)], concurrency_key="k", concurrency_limit=2)
    now = timezone.now()
    request = ClaimRequest("w", ("default",), datetime.timedelta(seconds=30))
    cutoffs = [now - datetime.timedelta(seconds=s) for s in (1, 60, 3600)]
    filters: list[Any] = [now, "default", False]
    plans = {}
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE aio_async_job")
        statements: dict[str, tuple[str, list[Any]]] = {
            "claim": (sql.claim(POSTGRESQL, 1), [*filters, 10, "w", now, now]),
            "keys": (sql.limited_keys(POSTGRESQL, 1), [*filters, *cutoffs, 100]),
            "limited": (
                sql.claim_limited(POSTGRESQL, 1, keys=True),
                [*filters, ["k"], *cutoffs, 100, *cutoffs, 10, "w", now, now],
            ),
        }
        for name, (text, params) in statements.items():
            cursor.execute("EXPLAIN " + text, params)
            plans[name] = "\n".join(row[0] for row in cursor.fetchall())
    assert request.queues == ("default",)
    assert "aio_async_job_claim" in plans["claim"], plans["claim"]
    for name in ("keys", "limited"):
        assert "aio_async_job_limited" in plans[name], plans[name]
        assert "aio_async_job_limit_running" in plans[name], plans[name]
        assert "Seq Scan" not in plans[name], plans[name]

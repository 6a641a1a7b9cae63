"""One set of job options: a keyword that is no option is refused by name, with the closest
option it may mean, and nothing is written.

Each bad call carries ``# type: ignore[call-arg]``: mypy (strict, with unused ignores reported)
fails if it stops seeing the call as wrong, so these lines test the typing as well.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Unpack, cast

import pytest

from aio_async import InvalidOption, ScheduleOptions, aschedule, schedule, schedule_many, task
from aio_async.allow import registered
from aio_async.api import job_maker
from aio_async.backends import JOB_OPTIONS, AioAsyncTask
from aio_async.models import Job
from aio_async.payload import JobOptions
from tests.app import django_tasks as dj
from tests.app import tasks


@pytest.mark.django_db
def test_schedule_refuses_a_misspelt_option_naming_the_one_it_may_mean() -> None:
    with pytest.raises(InvalidOption) as refused:
        schedule(tasks.add, (1, 2), priorty=3)  # type: ignore[call-arg]
    assert str(refused.value) == "schedule() got unknown option 'priorty' (did you mean 'priority'?)"
    with pytest.raises(
        InvalidOption, match=r"'qeue' \(did you mean 'queue'\?\), 'usng' \(did you mean 'using'\?\)"
    ):
        schedule(tasks.add, (1, 2), qeue="mail", usng="default")  # type: ignore[call-arg]
    assert not Job.objects.exists()


@pytest.mark.django_db
def test_an_option_like_no_other_is_refused_with_the_list_of_options() -> None:
    with pytest.raises(InvalidOption) as refused:
        schedule(tasks.add, (1, 2), xyzzy=1)  # type: ignore[call-arg]
    message = str(refused.value)
    assert message.startswith("schedule() got unknown option 'xyzzy'; it takes ")
    for name in ("after", "concurrency_key", "priority", "queue", "rate", "run_after", "using"):
        assert name in message
    assert not Job.objects.exists()


@pytest.mark.django_db
def test_schedule_many_refuses_a_misspelt_option_and_writes_none_of_the_calls() -> None:
    with pytest.raises(InvalidOption, match=r"schedule_many\(\) got unknown option 'max_attempt' "):
        schedule_many(tasks.add, [((1, 2), {}), ((3, 4), {})], max_attempt=3)  # type: ignore[call-arg]
    assert not Job.objects.exists()


@pytest.mark.django_db
def test_task_schedule_refuses_a_misspelt_option() -> None:
    with pytest.raises(InvalidOption, match=r"'priorty' \(did you mean 'priority'\?\)"):
        tasks.decorated.schedule(["key"], priorty=1)  # type: ignore[call-arg]
    with pytest.raises(InvalidOption, match=r"'unique_kye' \(did you mean 'unique_key'\?\)"):
        tasks.decorated.schedule(["key"], unique_kye="k")  # type: ignore[call-arg]
    assert not Job.objects.exists()
    # The parameters schedule() takes by position are Task.schedule()'s too.
    job = tasks.decorated.schedule(["key"], None, 9, None, None, {"note": 1}, max_attempts=4)
    assert (job.priority, job.meta, job.max_attempts, job.queue) == (9, {"note": 1}, 4, "tasks")


@pytest.mark.django_db(transaction=True)
async def test_aschedule_refuses_a_misspelt_option() -> None:
    with pytest.raises(InvalidOption, match=r"'timout' \(did you mean 'timeout'\?\)"):
        await aschedule(tasks.add, (1, 2), timout=3)  # type: ignore[call-arg]
    with pytest.raises(InvalidOption, match=r"'ratee' \(did you mean 'rate'\?\)"):
        await tasks.decorated.aschedule(["key"], ratee="1/s")  # type: ignore[call-arg]
    assert not await Job.objects.aexists()


def test_task_refuses_a_misspelt_option_and_registers_nothing() -> None:
    def misdeclared() -> None:
        """Never registered."""

    with pytest.raises(InvalidOption) as refused:
        task(priorty=3)(misdeclared)  # type: ignore[call-overload]
    assert str(refused.value) == "@task got unknown option 'priorty' (did you mean 'priority'?)"
    with pytest.raises(InvalidOption, match=r"'concurency_limit' \(did you mean 'concurrency_limit'\?\)"):
        task(concurency_limit=2)  # type: ignore[call-overload]
    assert not any(name.endswith("misdeclared") for name in registered())


def test_job_maker_refuses_a_misspelt_option() -> None:
    with pytest.raises(
        InvalidOption, match=r"job_maker\(\) got unknown option 'queu' \(did you mean 'queue'\?\)"
    ):
        job_maker(tasks.add, queu="mail")  # type: ignore[call-arg]


def test_the_tasks_backend_takes_every_job_option_but_queue_which_is_djangos_queue_name() -> None:
    assert set(JOB_OPTIONS) == set(JobOptions.__optional_keys__) - {"queue"}
    fields = {field.name for field in dataclasses.fields(AioAsyncTask)}
    assert set(JOB_OPTIONS) <= fields
    record = cast(AioAsyncTask, dj.write_record)  # the stubs know Django's Task only
    assert set(record.job_options()) == set(JobOptions.__optional_keys__)
    assert record.job_options()["queue"] == record.queue_name


@pytest.mark.django_db
def test_the_tasks_backends_using_refuses_a_misspelt_option() -> None:
    record = cast(AioAsyncTask, dj.write_record)
    with pytest.raises(
        InvalidOption, match=r"using\(\) got unknown option 'queue' \(did you mean 'queue_name'\?\)"
    ):
        record.using(queue="mail")
    bad: dict[str, Any] = {"max_atempts": 2}
    with pytest.raises(InvalidOption, match=r"'max_atempts' \(did you mean 'max_attempts'\?\)"):
        record.using(**bad)
    assert record.using(max_attempts=2, queue_name="default").max_attempts == 2
    assert not Job.objects.exists()


def _add_one(value: int, **options: Unpack[ScheduleOptions]) -> Job:
    """A project's own helper that passes schedule()'s options on, typed."""
    return schedule(tasks.add, (value, 1), **options)


@pytest.mark.django_db
def test_a_helper_passes_the_options_on() -> None:
    job = _add_one(1, queue="mail", max_attempts=2, unique=True)
    assert (job.queue, job.max_attempts, job.unique_states) == ("mail", 2, "queued,waiting")
    with pytest.raises(InvalidOption, match=r"'unqiue' \(did you mean 'unique'\?\)"):
        _add_one(2, unqiue=True)  # type: ignore[call-arg]

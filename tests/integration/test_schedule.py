"""schedule() and friends against a real database (DESIGN promises 1 and 6)."""

from __future__ import annotations

import datetime
import threading

import pytest
from asgiref.sync import sync_to_async
from django.core.exceptions import SynchronousOnlyOperation
from django.db import connection, transaction
from django.test import override_settings
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

import aio_async
from aio_async import (
    FunctionNotFound,
    GroupClosed,
    InvalidArguments,
    InvalidOption,
    NotCallable,
    ScheduleError,
    TaskNotAllowed,
    aschedule,
    deschedule,
    schedule,
)
from aio_async.models import Group, Job, Status
from aio_async.payload import identity
from tests.app import tasks
from tests.app.models import Record


class Rollback(Exception):
    pass


def _nested(depth: int) -> list[object]:
    value: list[object] = []
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.django_db
def test_schedule_writes_one_queued_job_with_the_originals_defaults() -> None:
    before = timezone.now()
    job = schedule("tests.app.tasks.add", args=(1, 2), kwargs=None)
    job.refresh_from_db()
    assert job.name == "tests.app.tasks.add"
    assert job.args == [1, 2]
    assert job.kwargs == {}
    assert job.priority == 5
    assert job.status == Status.QUEUED
    assert job.queue == "default"
    assert job.max_attempts == 5
    assert job.attempts == 0
    assert before <= job.added <= job.run_after <= timezone.now()
    assert job.identity == identity("tests.app.tasks.add", [1, 2], {})
    assert Job.objects.count() == 1


@pytest.mark.django_db
def test_schedule_accepts_the_callable_itself_and_positional_original_parameters() -> None:
    when = timezone.now() + datetime.timedelta(hours=1)
    job = schedule(tasks.write, ("k",), {"value": 3}, 9, when, None, {"why": "test"})
    job.refresh_from_db()
    assert (job.name, job.args, job.kwargs, job.priority, job.meta) == (
        "tests.app.tasks.write",
        ["k"],
        {"value": 3},
        9,
        {"why": "test"},
    )
    assert job.run_after == when
    assert schedule(tasks.Maths.double, [2]).name == "tests.app.tasks.Maths.double"


@pytest.mark.django_db
def test_decorated_task_brings_its_options_and_can_be_overridden() -> None:
    job = tasks.decorated.schedule(["x"])
    assert (job.queue, job.priority, job.max_attempts) == ("tasks", 7, 2)
    job = schedule(tasks.decorated, ["x"], priority=1, queue="other", max_attempts=4)
    assert (job.queue, job.priority, job.max_attempts) == ("other", 1, 4)
    assert schedule("tests.app.tasks.decorated", ["x"]).queue == "tasks"


@pytest.mark.django_db(transaction=True)
def test_a_rolled_back_transaction_leaves_no_job() -> None:
    with pytest.raises(Rollback), transaction.atomic():
        schedule(tasks.write, ["never"])
        assert Job.objects.count() == 1  # visible inside the transaction only
        raise Rollback
    assert Job.objects.count() == 0


@pytest.mark.django_db(transaction=True)
def test_a_job_is_invisible_to_other_connections_until_commit() -> None:
    seen: list[int] = []

    def look() -> None:
        seen.append(Job.objects.count())
        connection.close()

    with transaction.atomic():
        schedule(tasks.write, ["later"])
        other = threading.Thread(target=look)
        other.start()
        other.join()
    look()
    assert seen == [0, 1]


@pytest.mark.django_db(transaction=True)
async def test_aschedule_from_async_code_inside_a_transaction() -> None:
    job = await aschedule(tasks.write, ["from async"])
    assert job.pk is not None
    assert await Job.objects.filter(name="tests.app.tasks.write").acount() == 1

    def rolled_back() -> None:
        with transaction.atomic():
            schedule(tasks.write, ["async rollback"])
            raise Rollback

    with pytest.raises(Rollback):
        await sync_to_async(rolled_back)()
    assert await Job.objects.acount() == 1
    job = await tasks.adecorated.aschedule(["x"])
    assert job.name == "tests.app.tasks.adecorated"


BAD_INPUT = [
    (("tests.app.nosuch.f",), {}, FunctionNotFound),
    (("tests.app.tasks.nosuch",), {}, FunctionNotFound),
    (("tests.app.tasks.NOT_CALLABLE",), {}, NotCallable),
    (("os.system", ["rm -rf /"]), {}, TaskNotAllowed),
    (("subprocess.run",), {}, TaskNotAllowed),
    (("tests.app.tasks.system",), {}, TaskNotAllowed),
    ((print,), {}, TaskNotAllowed),
    ((lambda: None,), {}, FunctionNotFound),
    (("not a path",), {}, InvalidOption),
    ((42,), {}, InvalidOption),
    (("tests.app.tasks.add", "12"), {}, InvalidArguments),
    (("tests.app.tasks.add", [object()]), {}, InvalidArguments),
    (("tests.app.tasks.add", [float("nan")]), {}, InvalidArguments),
    (("tests.app.tasks.add",), {"kwargs": {"a": {1, 2}}}, InvalidArguments),
    (("tests.app.tasks.add",), {"kwargs": {1: 2}}, InvalidArguments),
    (("tests.app.tasks.add",), {"kwargs": ["a"]}, InvalidArguments),
    (("tests.app.tasks.add",), {"priority": "high"}, InvalidOption),
    (("tests.app.tasks.add",), {"priority": True}, InvalidOption),
    (("tests.app.tasks.add",), {"priority": 10**9}, InvalidOption),
    (("tests.app.tasks.add",), {"max_attempts": 0}, InvalidOption),
    (("tests.app.tasks.add",), {"max_attempts": 2.5}, InvalidOption),
    (("tests.app.tasks.add",), {"queue": ""}, InvalidOption),
    (("tests.app.tasks.add",), {"timeout": -1}, InvalidOption),
    (("tests.app.tasks.add",), {"meta": ["x"]}, InvalidOption),
    (("tests.app.tasks.add",), {"meta": {"when": datetime.date.today()}}, InvalidOption),
    (("tests.app.tasks.add",), {"run_after": "tomorrow"}, InvalidOption),
    (("tests.app.tasks.add",), {"group": 12}, InvalidOption),
    (("tests.app.tasks.add",), {"group": ""}, InvalidOption),
    # A call that cannot bind to the function's parameters could never run.
    (("tests.app.tasks.add", [1, 2, 3, 4]), {}, InvalidArguments),
    (("tests.app.tasks.add", [1]), {"kwargs": {"c": 3}}, InvalidArguments),
    # Values that would escape as other exceptions, or abort the caller's transaction.
    (("tests.app.tasks.add", [_nested(1000), 1]), {}, InvalidArguments),
    (("tests.app.tasks.add", [10**5000, 1]), {}, InvalidArguments),
    (("tests.app.tasks.add", ["nul \x00 here", 1]), {}, InvalidArguments),
    (("tests.app.tasks.add", ["lone \ud800 surrogate", 1]), {}, InvalidArguments),
    (("tests.app.tasks.add", [1, 2]), {"meta": {"k": "\x00"}}, InvalidOption),
    (("tests.app.tasks.add", [1, 2]), {"queue": "mail\x00"}, InvalidOption),
    (("tests.app.tasks.add", [1, 2]), {"group": "g\ud800"}, InvalidOption),
    (("tests.app.tasks.add", [1, 2]), {"run_after": datetime.timedelta.max}, InvalidOption),
]


@pytest.mark.django_db
@pytest.mark.parametrize(("args", "kwargs", "error"), BAD_INPUT)
def test_bad_input_raises_its_specific_error_and_writes_nothing(
    args: tuple[object, ...], kwargs: dict[str, object], error: type[ScheduleError]
) -> None:
    with pytest.raises(error) as info:
        schedule(*args, **kwargs)  # type: ignore[arg-type]
    assert isinstance(info.value, ScheduleError)
    assert str(info.value)
    assert Job.objects.count() == 0
    assert Group.objects.count() == 0


@pytest.mark.django_db
def test_bad_input_inside_a_transaction_leaves_the_transaction_usable() -> None:
    with transaction.atomic():
        schedule(tasks.write, ["kept"])
        with pytest.raises(InvalidArguments):
            schedule(tasks.write, [object()])
        schedule(tasks.write, ["kept too"])
    assert Job.objects.count() == 2


@pytest.mark.django_db
def test_naive_run_after_is_read_in_the_current_time_zone_when_use_tz() -> None:
    naive = datetime.datetime(2030, 6, 1, 12, 0)
    job = schedule(tasks.add, [1, 1], run_after=naive)
    job.refresh_from_db()
    assert job.run_after == timezone.make_aware(naive)  # Europe/Paris in the test settings
    assert job.run_after.utcoffset() is not None
    aware = datetime.datetime(2030, 6, 1, 12, 0, tzinfo=datetime.UTC)
    job = schedule(tasks.add, [1, 1], run_after=aware)
    job.refresh_from_db()
    assert job.run_after == aware


@pytest.mark.django_db
def test_timedelta_run_after_is_from_now() -> None:
    job = schedule(tasks.add, [1, 1], run_after=datetime.timedelta(minutes=5))
    assert job.run_after - job.added == datetime.timedelta(minutes=5)


@pytest.mark.django_db
@override_settings(USE_TZ=False)
def test_aware_run_after_becomes_local_naive_time_without_use_tz() -> None:
    aware = datetime.datetime(2030, 6, 1, 12, 0, tzinfo=datetime.UTC)
    job = schedule(tasks.add, [1, 1], run_after=aware)
    job.refresh_from_db()
    assert timezone.is_naive(job.run_after)
    assert job.run_after == datetime.datetime(2030, 6, 1, 14, 0)  # Paris is UTC+2 in June


@pytest.mark.django_db
def test_deschedule_cancels_only_matching_unstarted_jobs() -> None:
    first = schedule(tasks.add, [1, 2])
    second = schedule("tests.app.tasks.add", (1, 2))
    other_args = schedule(tasks.add, [2, 1])
    running = schedule(tasks.add, [1, 2])
    Job.objects.filter(pk=running.pk).update(status=Status.RUNNING)
    assert deschedule(tasks.add, [1, 2]) == 2
    statuses = dict(Job.objects.values_list("pk", "status"))
    assert statuses[first.pk] == statuses[second.pk] == Status.CANCELLED
    assert statuses[other_args.pk] == Status.QUEUED
    assert statuses[running.pk] == Status.RUNNING
    assert Job.objects.get(pk=first.pk).finished is not None
    assert deschedule(tasks.add, [1, 2]) == 0


@pytest.mark.django_db(transaction=True)
async def test_adeschedule() -> None:
    await aschedule(tasks.add, [5, 5])
    assert await aio_async.adeschedule(tasks.add, [5, 5]) == 1
    assert await Job.objects.filter(status=Status.CANCELLED).acount() == 1


@pytest.mark.django_db
def test_group_by_reference_reuses_the_open_group_then_starts_a_new_generation() -> None:
    first = schedule(tasks.add, [1, 1], group="nightly")
    second = schedule(tasks.add, [2, 2], group="nightly")
    assert first.group_id == second.group_id
    Job.objects.filter(pk=first.pk).update(status=Status.SUCCEEDED)
    third = schedule(tasks.add, [3, 3], group="nightly")
    assert third.group_id != first.group_id
    assert Group.objects.filter(reference="nightly").count() == 2


@pytest.mark.django_db
def test_an_explicit_group_with_a_finished_member_takes_no_new_job() -> None:
    group = Group.objects.create(reference="batch")
    job = schedule(tasks.add, [1, 1], group=group)
    Job.objects.filter(pk=job.pk).update(status=Status.CANCELLED)
    with pytest.raises(GroupClosed, match="already has a finished job"):
        schedule(tasks.add, [2, 2], group=group)
    assert Job.objects.count() == 1


@pytest.mark.django_db
def test_on_completion_makes_the_final_job_wait() -> None:
    group = Group.objects.create(reference="g")
    member = schedule(tasks.add, [1, 1], group=group)
    final = schedule(tasks.add, [9, 9], group=group)
    group.on_completion(final)
    final.refresh_from_db()
    assert final.status == Status.WAITING
    assert Group.objects.get(pk=group.pk).final_id == final.pk
    outsider = schedule(tasks.add, [3, 3])
    with pytest.raises(InvalidOption, match="not a member"):
        group.on_completion(outsider)
    deschedule(tasks.add, [1, 1])  # the only other member is cancelled: the final is released
    final.refresh_from_db()
    assert final.status == Status.QUEUED
    assert Job.objects.get(pk=member.pk).status == Status.CANCELLED


@pytest.mark.django_db(transaction=True)
def test_schedule_many_writes_every_call_in_the_callers_transaction() -> None:
    jobs = aio_async.schedule_many(
        tasks.add, [((1, 2), None), ([3, 4], {}), ((), {"a": 5, "b": 6})], priority=8
    )
    assert [job.args for job in jobs] == [[1, 2], [3, 4], []]
    assert all(job.pk is not None and job.priority == 8 for job in jobs)
    assert Job.objects.count() == 3
    assert jobs[0].identity == identity("tests.app.tasks.add", [1, 2], {})
    with pytest.raises(Rollback), transaction.atomic():
        aio_async.schedule_many(tasks.add, [((1, 1), None)] * 10)
        raise Rollback
    assert Job.objects.count() == 3
    assert aio_async.schedule_many(tasks.add, []) == []


@pytest.mark.django_db
def test_schedule_many_gives_each_job_its_own_row_however_many_statements_it_takes() -> None:
    # 5,000 jobs exceed SQLite's parameters per statement, so there it takes several INSERTs.
    jobs = aio_async.schedule_many(
        tasks.add, [((index, 0), {}) for index in range(5000)], meta={"batch": 1}, run_after=None
    )
    stored = dict(Job.objects.values_list("pk", "args"))
    assert len(stored) == 5000
    assert all(stored[job.pk] == [index, 0] == job.args for index, job in enumerate(jobs))
    assert not any(job._state.adding for job in jobs)
    job = Job.objects.get(pk=jobs[4321].pk)
    assert (job.meta, job.result, job.status, job.started) == ({"batch": 1}, None, Status.QUEUED, None)


@pytest.mark.django_db
def test_schedule_writes_through_djangos_cursor_so_query_capture_sees_it() -> None:
    with CaptureQueriesContext(connection) as captured:
        schedule(tasks.add, (1, 2))
        aio_async.schedule_many(tasks.add, [((1, 2), None)] * 3)
    inserts = [query["sql"] for query in captured.captured_queries if "INSERT" in query["sql"]]
    assert len(inserts) == 2


@pytest.mark.django_db
@pytest.mark.parametrize(
    "calls",
    [
        [((1, 2), None), ((object(),), None)],
        [((1, 2), None), "not a pair"],
        [((1, 2), None), ((1,), {"x": {1}})],
    ],
)
def test_schedule_many_with_one_bad_call_writes_nothing(calls: list[object]) -> None:
    with pytest.raises(InvalidArguments, match="call 1"):
        aio_async.schedule_many(tasks.add, calls)  # type: ignore[arg-type]
    assert Job.objects.count() == 0


@pytest.mark.django_db
def test_schedule_many_refuses_what_schedule_refuses() -> None:
    with pytest.raises(TaskNotAllowed):
        aio_async.schedule_many("os.system", [(["ls"], None)])
    with pytest.raises(InvalidOption):
        aio_async.schedule_many(tasks.add, [((1, 2), None)], priority="high")  # type: ignore[arg-type]
    assert Job.objects.count() == 0


@pytest.mark.django_db(transaction=True)
async def test_aschedule_many() -> None:
    jobs = await aio_async.aschedule_many(tasks.add, [((1, 2), None)] * 3, group="batch")
    assert len({job.group_id for job in jobs}) == 1
    assert await Job.objects.acount() == 3


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("args", "options"),
    [
        (["nul \x00", 1], {}),
        (["\ud800", 1], {}),
        ([_nested(1000), 1], {}),
        ([10**5000, 1], {}),
        ([1, 2], {"meta": {"k": "\x00"}}),
        ([1, 2], {"run_after": datetime.timedelta.max}),
    ],
)
def test_a_refused_value_leaves_the_callers_transaction_usable(
    args: list[object], options: dict[str, object]
) -> None:
    with transaction.atomic():
        Record.objects.create(key="before")
        with pytest.raises(ScheduleError):
            schedule(tasks.add, args, **options)  # type: ignore[arg-type]
        Record.objects.create(key="after")  # the transaction was not aborted
    assert sorted(Record.objects.values_list("key", flat=True)) == ["after", "before"]
    assert not Job.objects.exists()


@pytest.mark.django_db
def test_priority_zero_is_a_priority_not_a_missing_one() -> None:
    assert schedule(tasks.lowest, ["a"]).priority == 0
    assert tasks.lowest.schedule(["b"]).priority == 0
    assert schedule(tasks.decorated, ["c"], priority=0).priority == 0  # its task says 7


@pytest.mark.django_db(transaction=True)
async def test_schedule_from_async_code_says_to_use_aschedule() -> None:
    with pytest.raises(SynchronousOnlyOperation, match=r"await aschedule\(\.\.\.\)"):
        schedule(tasks.add, [1, 2])
    assert not await Job.objects.aexists()


def test_familiar_names_from_other_queues_point_to_schedule() -> None:
    with pytest.raises(AttributeError, match=r"use \.schedule"):
        tasks.decorated.delay("x")
    with pytest.raises(AttributeError, match="AioAsyncBackend"):
        tasks.decorated.enqueue("x")
    with pytest.raises(AttributeError, match="no attribute 'nosuch'"):
        tasks.decorated.nosuch  # noqa: B018


@pytest.mark.django_db(transaction=True)
async def test_the_readmes_asgi_example_commits_a_row_and_its_job_together(async_client: object) -> None:
    response = await async_client.get("/records/", {"key": "kept"})  # type: ignore[attr-defined]
    assert response.status_code == 200
    with pytest.raises(ValueError, match="nothing may remain"):
        await async_client.get("/records/", {"key": "fail-1"})  # type: ignore[attr-defined]
    assert [r.key async for r in Record.objects.all()] == ["kept"]
    assert [job.args async for job in Job.objects.all()] == [["job for kept"]]


def _prepared_inserts() -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_prepared_statements WHERE statement LIKE %s",
            ['INSERT INTO "aio_async_job"%'],
        )
        return int(cursor.fetchone()[0])


@pytest.mark.postgres_only
@pytest.mark.psycopg3
@pytest.mark.django_db(transaction=True)
def test_the_queues_statements_run_prepared_with_djangos_default_options_unless_turned_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    connection.close()
    assert "prepare_threshold" not in connection.settings_dict.get("OPTIONS", {})
    schedule(tasks.add, [1, 2])
    assert _prepared_inserts() == 1
    # A pooler in transaction mode: the database's OPTIONS turn preparation off, for us too.
    connection.close()
    monkeypatch.setitem(connection.settings_dict, "OPTIONS", {"prepare_threshold": None})
    schedule(tasks.add, [1, 2])
    assert _prepared_inserts() == 0
    connection.close()

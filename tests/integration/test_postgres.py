"""PostgreSQL's direct connection: claims, leases and coroutine completions on the loop."""

from __future__ import annotations

import asyncio
import datetime

import pytest
from asgiref.sync import sync_to_async
from django.db import connection
from django.utils import timezone

from aio_async import schedule
from aio_async.bridge import Outcome
from aio_async.dialects import Claim
from aio_async.dialects.postgresql import Direct
from aio_async.executor import Executor
from aio_async.models import Group, Job, Status
from tests.app import tasks
from tests.conftest import queue_settings

pytestmark = [pytest.mark.postgres_only, pytest.mark.django_db(transaction=True)]


async def claim(
    direct: Direct, worker: str, limit: int, queue: str = "default", seconds: float = 30
) -> list[Job]:
    now = timezone.now()
    return await direct.claim(Claim(worker, (queue,), limit, now, now + datetime.timedelta(seconds=seconds)))


def terminate(pid: int) -> datetime.datetime:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(%s), clock_timestamp()", [pid])
        killed_at: datetime.datetime = cursor.fetchone()[1]
    return killed_at


def backends_since(moment: datetime.datetime) -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND backend_start > %s",
            [moment],
        )
        return int(cursor.fetchone()[0])


async def test_a_direct_claim_gives_the_same_jobs_as_the_orms() -> None:
    for priority in (1, 3, 2):
        await sync_to_async(schedule)(tasks.add, [priority, {"k": [priority]}], priority=priority)
    await sync_to_async(schedule)(tasks.add, [9, 9], run_after=datetime.timedelta(hours=1))
    direct = Direct(connection)
    try:
        claimed = await claim(direct, "w1", 2)
        assert [job.priority for job in claimed] == [3, 2]
        assert claimed[0].args == [3, {"k": [3]}]
        assert (claimed[0].status, claimed[0].attempts, claimed[0].locked_by) == (Status.RUNNING, 1, "w1")
        assert claimed[0]._state.db == "default"
        assert not claimed[0]._state.adding
        stored = await Job.objects.aget(pk=claimed[0].pk)
        assert (stored.status, stored.attempts, stored.locked_by) == (Status.RUNNING, 1, "w1")
        assert [job.priority for job in await claim(direct, "w1", 5)] == [1]
    finally:
        await direct.close()


async def test_direct_heartbeat_extends_only_this_workers_leases() -> None:
    await sync_to_async(schedule)(tasks.add, [1, 1])
    await sync_to_async(schedule)(tasks.add, [2, 2])
    direct = Direct(connection)
    try:
        [mine] = await claim(direct, "w1", 1, seconds=1)
        [theirs] = await claim(direct, "w2", 1, seconds=1)
        until = timezone.now() + datetime.timedelta(seconds=60)
        assert await direct.heartbeat([mine.pk, theirs.pk], "w1", until) == 1
        assert (await Job.objects.aget(pk=mine.pk)).locked_until == until
        assert (await Job.objects.aget(pk=theirs.pk)).locked_until != until
    finally:
        await direct.close()


async def test_direct_completion_is_fenced_and_stores_results() -> None:
    for key in ("kept", "none", "taken"):
        await sync_to_async(schedule)(tasks.awrite, [key])
    direct = Direct(connection)
    try:
        kept, none, taken = await claim(direct, "w1", 3)
        # The third job's lease expired and another worker holds it now.
        await Job.objects.filter(pk=taken.pk).aupdate(attempts=2, locked_by="w2")
        held = await direct.complete([(kept, {"n": [1, 2]}), (none, None), (taken, 3)], "w1", timezone.now())
        assert held == {kept.pk, none.pk}
        rows = {job.pk: job async for job in Job.objects.all()}
        assert (rows[kept.pk].status, rows[kept.pk].result) == (Status.SUCCEEDED, {"n": [1, 2]})
        assert rows[kept.pk].locked_until is None
        assert (rows[none.pk].status, rows[none.pk].result) == (Status.SUCCEEDED, None)
        assert (rows[taken.pk].status, rows[taken.pk].locked_by) == (Status.RUNNING, "w2")
    finally:
        await direct.close()


async def test_a_killed_direct_connection_is_replaced() -> None:
    await sync_to_async(schedule)(tasks.awrite, ["a"])
    direct = Direct(connection)
    try:
        [job] = await claim(direct, "w1", 1)
        assert direct._connection is not None
        pid = direct._connection.info.backend_pid
        await sync_to_async(terminate)(pid)
        # A completion is retried once on a new connection (fencing makes that safe).
        assert await direct.complete([(job, 1)], "w1", timezone.now()) == {job.pk}
        assert direct._connection.info.backend_pid != pid
    finally:
        await direct.close()


async def test_completions_that_find_the_connection_dead_share_one_replacement() -> None:
    for key in ("a", "b", "c"):
        await sync_to_async(schedule)(tasks.awrite, [key])
    direct = Direct(connection)
    try:
        jobs = await claim(direct, "w1", 3)
        assert direct._connection is not None
        killed_at = await sync_to_async(terminate)(direct._connection.info.backend_pid)
        held = await asyncio.gather(*(direct.complete([(job, None)], "w1", timezone.now()) for job in jobs))
        assert set().union(*held) == {job.pk for job in jobs}
        assert await sync_to_async(backends_since)(killed_at) == 1
    finally:
        await direct.close()


async def test_a_claim_on_a_killed_connection_fails_and_the_next_one_reconnects() -> None:
    await sync_to_async(schedule)(tasks.awrite, ["a"])
    direct = Direct(connection)
    try:
        assert await claim(direct, "w1", 1, "nothing") == []
        assert direct._connection is not None
        pid = direct._connection.info.backend_pid
        await sync_to_async(terminate)(pid)
        with pytest.raises(Exception, match=r"terminat|closed|connection"):
            await claim(direct, "w1", 1)
        [job] = await claim(direct, "w1", 1)
        assert job.args == ["a"]
    finally:
        await direct.close()


async def test_a_coroutine_group_member_releases_the_final_job_when_it_completes() -> None:
    group = await Group.objects.acreate(reference="async-group")
    await sync_to_async(schedule)(tasks.awrite, ["member"], group=group)
    final = await sync_to_async(schedule)(tasks.write, ["final"], group=group)
    await sync_to_async(group.on_completion)(final)
    outcomes = await Executor(settings=queue_settings()).run(until_empty=True)
    assert outcomes == {Outcome.SUCCEEDED: 2}
    assert await Job.objects.filter(status=Status.SUCCEEDED).acount() == 2

"""Claims past the frontier: steady while a transaction elsewhere keeps vacuum from cleaning up.

A transaction left open (``REPEATABLE READ``, as ``pg_dump`` holds one) keeps every row version
that claimed jobs leave behind; a full claim walks all of their index entries, a claim past the
frontier does not. Nothing is left behind: what lands behind the frontier is swept up.
"""

from __future__ import annotations

import asyncio
import datetime
import functools
import re
from collections.abc import Iterator

import psycopg
import pytest
from asgiref.sync import sync_to_async
from django.db import connection
from django.utils import timezone

from aio_async import schedule, schedule_many
from aio_async.models import Job, Status
from aio_async.store import operations
from aio_async.store.database import DatabaseStore
from aio_async.store.dialects.postgresql import POSTGRESQL
from aio_async.store.statements import Op
from aio_async.worker.threads import open_store
from tests.app import tasks
from tests.app.models import Record
from tests.conftest import adrain, queue_settings

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.postgres_only]


def dsn() -> str:
    """The test database, for connections of the test's own."""
    params = connection.get_connection_params()
    return psycopg.conninfo.make_conninfo(
        **{
            key: value
            for key, value in params.items()
            if key in ("host", "port", "user", "password", "dbname")
        }
    )


@pytest.fixture
def held_snapshot() -> Iterator[None]:
    """A transaction open elsewhere in the database, holding the oldest snapshot, as pg_dump does."""
    with psycopg.connect(dsn()) as holder:
        holder.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        holder.execute("SELECT txid_current()")
        yield
        holder.rollback()


def buffers(op: Op[object]) -> int:
    """Buffers the scans of the claim index touch in the first statement of ``op`` (run, rolled back)."""
    statement, params = next(op)
    with psycopg.connect(dsn()) as conn:
        plan = [row[0] for row in conn.execute("EXPLAIN (ANALYZE, BUFFERS) " + statement, params)]
        conn.rollback()
    scans = [n for n, line in enumerate(plan) if "Index Scan using aio_async_job_claim" in line]
    assert scans, plan
    counts = [next(line for line in plan[n:] if "Buffers:" in line) for n in scans]
    return sum(int(count) for line in counts for count in re.findall(r"(?:hit|read)=(\d+)", line))


def frontier_store() -> DatabaseStore:
    return open_store(queue_settings(claim_frontier="always", concurrency=100), "host:1:frontier")


async def test_past_the_frontier_a_claim_does_not_walk_the_jobs_claimed_under_a_held_snapshot(
    held_snapshot: None,
) -> None:
    await sync_to_async(schedule_many)(tasks.add, [([n, n], None) for n in range(6000)])
    store = frontier_store()
    try:
        claimed = 0
        while claimed < 5900:
            claimed += len(await store.claim(100, alone=False))
        assert store.frontier is not None
        levels = store.frontier.levels()
        now = timezone.now()
        full = buffers(operations.claim(POSTGRESQL, store.request, 10, False, now))
        past = buffers(operations.claim_after(POSTGRESQL, store.request, 10, False, now, levels))
    finally:
        await store.close()
    # Every claimed job left an entry at the head of the claim index that the held snapshot
    # keeps: the full claim visits them all (and their rows); the claim past the frontier
    # starts after them.
    assert past < 60, past
    assert full > 5 * past, (full, past)


async def test_jobs_behind_the_frontier_are_claimed_by_a_look_back_or_a_sweep_none_left_behind() -> None:
    await sync_to_async(schedule_many)(tasks.add, [([n, n], None) for n in range(20)])
    store = frontier_store()
    try:
        first = await store.claim(10, alone=False)  # a sweep: nothing to start from yet
        second = await store.claim(10, alone=False)  # past the frontier
        assert len(first) == len(second) == 10
        assert store.frontier is not None
        levels = store.frontier.levels()
        [(_, _, reached, _)] = levels
        # As a transaction that began before the last claim and committed after it leaves it:
        just_behind = await sync_to_async(schedule)(
            tasks.add, [5, 6], run_after=reached - datetime.timedelta(seconds=1)
        )
        urgent = await sync_to_async(schedule)(tasks.add, [1, 2], priority=9)  # a priority not seen yet
        late = await sync_to_async(schedule)(
            tasks.add, [3, 4], run_after=reached - datetime.timedelta(hours=1)
        )
        # The statement past the frontier does not see them.
        now = timezone.now()
        op = operations.claim_after(POSTGRESQL, store.request, 10, False, now, levels)
        statement, params = next(op)
        with psycopg.connect(dsn()) as conn:
            assert conn.execute(statement, params).fetchall() == []
            conn.rollback()
        # The store looks a little behind the frontier when it finds nothing past it, and sweeps
        # the whole queue now and then: each is claimed, in that order.
        began = asyncio.get_running_loop().time()
        found: dict[int, float] = {}
        while len(found) < 3 and asyncio.get_running_loop().time() - began < 30:
            for attempt in await store.claim(10, alone=False):
                found[attempt.job_id] = asyncio.get_running_loop().time() - began
            await asyncio.sleep(0.1)
        assert set(found) == {just_behind.pk, urgent.pk, late.pk}
        assert found[just_behind.pk] < 1.0  # the first claim that finds nothing past it looks back
        assert list(found).index(urgent.pk) < list(found).index(late.pk)  # a sweep, in priority order
    finally:
        await store.close()


async def test_a_worker_claiming_past_its_frontier_runs_every_job_once(
    held_snapshot: None, caplog: pytest.LogCaptureFixture
) -> None:
    calls = [([f"k{n}"], None) for n in range(300)]
    await sync_to_async(schedule_many)(tasks.write, calls[:100])
    await sync_to_async(schedule_many)(tasks.write, calls[100:200], priority=7)
    await sync_to_async(schedule_many)(
        tasks.write, calls[200:], run_after=timezone.now() - datetime.timedelta(minutes=5)
    )
    outcomes = await adrain(claim_frontier="always", concurrency=8)
    assert sum(outcomes.values()) == 300
    # Three priorities past the frontier at once: every claim went through.
    assert not [record for record in caplog.records if getattr(record, "action", "") == "claim_failed"]

    def check() -> None:
        assert Job.objects.exclude(status=Status.SUCCEEDED).count() == 0
        keys = list(Record.objects.values_list("key", flat=True))
        assert sorted(keys) == sorted(f"k{n}" for n in range(300))

    await sync_to_async(check)()


async def test_a_worker_on_postgresql_keeps_a_frontier_unless_told_never() -> None:
    async def frontier(**overrides: object) -> bool:
        store = open_store(queue_settings(**overrides), "host:1:f")
        try:
            return store.frontier is not None
        finally:
            await store.close()

    assert await frontier(claim_frontier="auto")
    assert not await frontier(claim_frontier="never")
    assert await frontier(claim_frontier="auto", queues=("a", "b"))
    assert await frontier(claim_frontier="always", queues=("*",))


async def test_a_worker_of_every_queue_claims_past_each_queues_frontier_and_leaves_paused_ones() -> None:
    for queue in ("a", "b"):
        await sync_to_async(schedule_many)(tasks.add, [([n, n], None) for n in range(30)], queue=queue)
    store = open_store(queue_settings(claim_frontier="always", queues=("*",)), "host:1:every")
    try:
        taken: list[str] = []
        for _ in range(200):
            claimed = await store.claim(7, alone=False, paused=frozenset({"b"}))
            taken += [attempt.queue for attempt in claimed]
            if len(taken) == 30:
                break
            if not claimed:
                await asyncio.sleep(0.1)
        assert taken == ["a"] * 30
        assert store.frontier is not None
        assert {queue for queue, _, _, _ in store.frontier.levels()} == {"a"}
        for _ in range(200):  # queue b is new to the frontier: the next sweep finds it
            taken += [attempt.queue for attempt in await store.claim(7, alone=False)]
            if len(taken) == 60:
                break
            await asyncio.sleep(0.1)
        assert taken[30:] == ["b"] * 30
    finally:
        await store.close()


async def test_a_completion_under_a_held_snapshot_finds_its_row_by_primary_key(held_snapshot: None) -> None:
    await sync_to_async(schedule_many)(tasks.add, [([n, n], None) for n in range(3000)])
    store = frontier_store()
    try:
        done = 0
        while done < 2900:  # each leaves an entry in the lease index that the snapshot keeps
            attempts = await store.claim(100, alone=False)
            finished = [(attempt, 1) for attempt in attempts]
            done += len(
                await store.connector.run(
                    functools.partial(
                        operations.complete, finished=finished, worker_id=store.worker_id, now=timezone.now()
                    )
                )
            )
        [attempt] = await store.claim(1, alone=False)
    finally:
        await store.close()
    await sync_to_async(lambda: connection.cursor().execute("ANALYZE aio_async_job"))()
    statement, params = next(operations.complete(POSTGRESQL, [(attempt, 1)], store.worker_id, timezone.now()))
    with psycopg.connect(dsn()) as conn:
        plan = "\n".join(row[0] for row in conn.execute("EXPLAIN (ANALYZE, BUFFERS) " + statement, params))
        rescue, rescue_params = next(operations.expired(POSTGRESQL, "another", timezone.now()))
        rescue_plan = "\n".join(row[0] for row in conn.execute("EXPLAIN " + rescue, rescue_params))
        conn.rollback()
    assert "aio_async_job_pkey" in plan, plan
    assert "aio_async_job_lease" not in plan, plan
    assert "aio_async_job_lease" in rescue_plan, rescue_plan
    assert "Seq Scan" not in rescue_plan, rescue_plan

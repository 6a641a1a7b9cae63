"""The executor's state machine on an in-memory store: no database is touched here.

pytest-django refuses database access in these tests (no ``django_db`` mark), so a test
that passes proves the executor reached the database only through its Store.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import logging
import threading
import time
from typing import Any

import pytest

from aio_async import task
from aio_async.conf import get_settings
from aio_async.executor import PICKUP_SAMPLE, PROBE_EVERY, Executor, _Pickups
from aio_async.values import Attempt, Outcome
from tests.unit.memory import MemoryJob, MemoryStore

STORE: MemoryStore
#: Functions running right now, and the most that ever ran at once.
ACTIVE = {"now": 0, "peak": 0, "isolated_saw": -1}
_LOCK = threading.Lock()


def _enter() -> None:
    with _LOCK:
        ACTIVE["now"] += 1
        ACTIVE["peak"] = max(ACTIVE["peak"], ACTIVE["now"])


def _leave(job_id: int) -> None:
    with _LOCK:
        ACTIVE["now"] -= 1
    STORE.returned(job_id)


@task
def nap(job_id: int, seconds: float) -> int:
    """Block a thread."""
    _enter()
    try:
        time.sleep(seconds)
        return job_id
    finally:
        _leave(job_id)


@task
async def anap(job_id: int, seconds: float) -> int:
    """Sleep on the loop."""
    _enter()
    try:
        await asyncio.sleep(seconds)
        return job_id
    finally:
        _leave(job_id)


@task
def alone(job_id: int) -> int:
    """Record how many functions ran beside this one."""
    _enter()
    try:
        ACTIVE["isolated_saw"] = ACTIVE["now"]
        time.sleep(0.05)
        return job_id
    finally:
        _leave(job_id)


@task
async def boom(job_id: int) -> None:
    """Raise."""
    _leave(job_id)
    raise ValueError("boom")


def make(store: MemoryStore, **settings: Any) -> Executor:
    base = dataclasses.replace(
        get_settings(), concurrency=store.concurrency, poll_interval=0.01, shutdown_timeout=5
    )
    return Executor(settings=dataclasses.replace(base, **settings), store=store)


def jobs(name: str, count: int, *args: Any, start: int = 1, **options: Any) -> list[MemoryJob]:
    return [
        MemoryJob(n, f"tests.unit.test_executor.{name}", [n, *args], **options)
        for n in range(start, start + count)
    ]


@pytest.fixture(autouse=True)
def _reset() -> None:
    ACTIVE.update(now=0, peak=0, isolated_saw=-1)


def run(store: MemoryStore, **settings: Any) -> dict[Outcome, int]:
    global STORE
    STORE = store
    return dict(asyncio.run(make(store, **settings).run(until_empty=True)))


def test_a_worker_claims_only_for_free_slots_and_fills_them() -> None:
    store = MemoryStore(jobs("nap", 6, 0.05) + jobs("anap", 6, 0.05, start=7), concurrency=3)
    assert run(store) == {Outcome.SUCCEEDED: 12}
    assert ACTIVE["peak"] == 3
    claims = [event for event in store.events if event[0] == "claim"]
    assert all(limit <= 3 for _, limit, _, _ in claims)  # the store also asserts limit ≤ free slots
    assert store.closed


def test_an_isolated_job_is_claimed_alone_and_runs_alone() -> None:
    store = MemoryStore(
        [
            *jobs("nap", 3, 0.1),
            MemoryJob(4, "tests.unit.test_executor.alone", [4], isolated=True),
            *jobs("nap", 3, 0.1, start=5),
        ],
        concurrency=4,
    )  # fmt: skip
    assert run(store) == {Outcome.SUCCEEDED: 7}
    assert ACTIVE["isolated_saw"] == 1  # only itself
    [isolated_claim] = [event for event in store.events if event[0] == "claim" and 4 in event[3]]
    assert isolated_claim[2] is True  # claimed by an idle worker
    assert isolated_claim[3] == [4]  # and alone


def test_a_coroutine_job_past_its_timeout_is_cancelled_and_failed() -> None:
    store = MemoryStore(jobs("anap", 1, 5.0, timeout=0.05, max_attempts=1), concurrency=1)
    assert run(store) == {Outcome.FAILED: 1}
    assert store.jobs[1].errors[0].exception == "TimeoutError"


def test_a_sync_job_past_its_timeout_is_failed_at_once_and_keeps_its_slot_until_it_returns() -> None:
    store = MemoryStore(
        jobs("nap", 1, 0.4, timeout=0.05, max_attempts=1) + jobs("nap", 1, 0.0, start=2), concurrency=1
    )
    began = time.monotonic()
    outcomes = run(store)
    assert outcomes == {Outcome.FAILED: 1, Outcome.SUCCEEDED: 1}
    assert store.jobs[1].errors[0].exception == "TimeoutError"
    assert "cannot be stopped" in store.jobs[1].errors[0].message
    assert ACTIVE["peak"] == 1  # the second job waited for the thread, not for the timeout
    assert time.monotonic() - began >= 0.4


def test_a_row_that_is_not_allowed_is_refused_for_good_and_one_that_does_not_import_is_retried() -> None:
    store = MemoryStore(
        [MemoryJob(1, "os.system", ["true"]), MemoryJob(2, "tests.app.nosuch.f", [])], concurrency=2
    )
    assert run(store) == {Outcome.FAILED: 1, Outcome.RETRYING: 1}
    assert ("fail", 1, "aio_async.errors.JobRefused", True) in store.events
    assert ("fail", 2, "aio_async.errors.JobRefused", False) in store.events
    assert store.jobs[1].errors[0].message.startswith("TaskNotAllowed: ")


def test_arguments_that_do_not_fit_the_function_are_refused_for_good() -> None:
    store = MemoryStore([MemoryJob(1, "tests.unit.test_executor.nap", [1, 2, 3, 4])], concurrency=1)
    assert run(store) == {Outcome.FAILED: 1}
    assert "do not fit" in store.jobs[1].errors[0].message


def test_a_failed_coroutine_job_is_recorded_and_the_worker_carries_on() -> None:
    store = MemoryStore(jobs("boom", 1, max_attempts=1) + jobs("anap", 1, 0.0, start=2), concurrency=1)
    assert run(store) == {Outcome.FAILED: 1, Outcome.SUCCEEDED: 1}
    assert store.jobs[1].errors[0].exception == "ValueError"


def test_stop_releases_coroutine_jobs_past_the_grace_period_and_waits_for_sync_ones() -> None:
    global STORE
    store = STORE = MemoryStore(jobs("anap", 1, 30.0) + jobs("nap", 1, 0.3, start=2), concurrency=2)
    executor = make(store, shutdown_timeout=0.1)

    async def scenario() -> dict[Outcome, int]:
        running = asyncio.create_task(executor.run())
        while ACTIVE["now"] < 2:
            await asyncio.sleep(0.01)
        executor.stop()
        return dict(await running)

    assert asyncio.run(scenario()) == {Outcome.RELEASED: 1, Outcome.SUCCEEDED: 1}
    assert store.statuses() == {1: "queued", 2: "succeeded"}
    assert store.jobs[1].excused == 1


def test_a_claim_that_fails_is_retried_after_exactly_the_delay_it_announced(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = MemoryStore(jobs("anap", 1, 0.0), concurrency=1)
    store.claim_errors = [ConnectionError("down")] * 3
    caplog.set_level(logging.WARNING, "aio_async.executor")
    began = time.monotonic()
    assert run(store) == {Outcome.SUCCEEDED: 1}
    announced = [
        float(record.getMessage().split("retrying in ")[1].split(" s")[0])
        for record in caplog.records
        if "retrying in" in record.getMessage()
    ]
    assert len(announced) == 3
    assert time.monotonic() - began >= sum(announced)


def test_a_claim_that_failed_while_the_database_was_away_is_retried_as_soon_as_it_answers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = MemoryStore(jobs("anap", 1, 0.0), concurrency=1)
    store.claim_errors = [ConnectionError("down")]
    # Unanswered: the read before the claim, the probe after it fails, the probe PROBE_EVERY later.
    store.paused_errors = [ConnectionError("down")] * 3
    caplog.set_level(logging.INFO, "aio_async.executor")
    began = time.monotonic()
    assert run(store, poll_interval=5.0) == {Outcome.SUCCEEDED: 1}
    took = time.monotonic() - began
    [failed] = [record for record in caplog.records if record.action == "claim_failed"]  # type: ignore[attr-defined]
    assert (
        "the database does not answer: retrying as soon as it does, in 10.0 s at most" in failed.getMessage()
    )
    assert [record.action for record in caplog.records].count("database_back") == 1  # type: ignore[attr-defined]
    # Asked every PROBE_EVERY seconds: answered at the second probe after the first, claimed then.
    assert 2 * PROBE_EVERY <= took < 10.0, took
    probes = [event for event in store.events if event[0].startswith("paused")]
    assert probes[:4] == [("paused_failed",)] * 3 + [("paused",)]


def test_a_claim_that_fails_while_the_database_answers_backs_off_without_spinning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = MemoryStore(jobs("anap", 1, 0.0), concurrency=1)
    store.claim_errors = [ValueError("a broken query")] * 3
    caplog.set_level(logging.WARNING, "aio_async.executor")
    began = time.monotonic()
    assert run(store, poll_interval=0.2) == {Outcome.SUCCEEDED: 1}
    messages = [record.getMessage() for record in caplog.records if record.action == "claim_failed"]  # type: ignore[attr-defined]
    # The first is retried soon (a lost connection already replaced?), then 0.8 s, then 1.6 s.
    assert [message.split("; ")[-1] for message in messages] == [
        "retrying in 0.4 s",
        "retrying in 0.8 s",
        "retrying in 1.6 s",
    ]
    assert time.monotonic() - began >= 2.8
    assert len([event for event in store.events if event[0] == "claim_failed"]) == 3


def test_a_coroutine_job_whose_lease_was_taken_over_is_cancelled() -> None:
    global STORE
    store = STORE = MemoryStore(jobs("anap", 1, 30.0), concurrency=1)
    executor = make(store, heartbeat_interval=0.02)

    async def scenario() -> dict[Outcome, int]:
        running = asyncio.create_task(executor.run())
        while ACTIVE["now"] < 1:
            await asyncio.sleep(0.01)
        store.lost_leases.add(1)
        for _ in range(200):
            if ACTIVE["now"] == 0:
                break
            await asyncio.sleep(0.01)
        executor.stop()
        return dict(await running)

    # Counted, logged and signalled as its lease lost: neither failed nor silently dropped.
    assert asyncio.run(scenario()) == {Outcome.LEASE_LOST: 1}
    assert ACTIVE["now"] == 0  # cancelled, not left running for 30 s


def test_a_job_whose_thread_cannot_connect_is_released_and_the_worker_runs_fewer_at_once() -> None:
    store = MemoryStore(jobs("nap", 4, 0.05), concurrency=4)
    store.no_connection_for = {2}
    outcomes = run(store)
    assert outcomes[Outcome.SUCCEEDED] == 4  # the released job ran again
    assert outcomes[Outcome.RELEASED] == 1
    assert ("release", 2) in store.events
    assert store.jobs[2].excused == 1


def test_a_wakeup_for_a_served_queue_starts_a_claim_at_once() -> None:
    global STORE
    store = STORE = MemoryStore([], concurrency=1)
    store.wakeups = asyncio.Queue()
    executor = make(store, poll_interval=60)

    async def scenario() -> int:
        running = asyncio.create_task(executor.run())
        while not any(event[0] == "claim" for event in store.events):
            await asyncio.sleep(0.01)
        claims = len(store.events)
        store.jobs[1] = MemoryJob(1, "tests.unit.test_executor.anap", [1, 0.0])
        assert store.wakeups is not None
        await store.wakeups.put("other-queue")
        await asyncio.sleep(0.1)
        assert len(store.events) == claims  # not a queue it serves
        await store.wakeups.put("default")
        while store.jobs[1].status != "succeeded":
            await asyncio.sleep(0.01)
        executor.stop()
        await running
        return claims

    asyncio.run(scenario())


def test_a_job_whose_end_could_not_be_written_is_given_back_once_the_database_answers() -> None:
    global STORE
    store = STORE = MemoryStore(jobs("anap", 1, 0.0), concurrency=1)
    store.complete_errors = [ConnectionError("the database went away")]
    executor = make(store, rescue_interval=0.02)

    async def scenario() -> dict[Outcome, int]:
        running = asyncio.create_task(executor.run())
        while store.jobs[1].status != "succeeded":
            await asyncio.sleep(0.01)
        executor.stop()
        return dict(await running)

    assert asyncio.run(scenario()) == {Outcome.SUCCEEDED: 1}
    assert ("release", 1) in store.events  # given back, its attempt excused, then run again
    assert store.jobs[1].excused == 1


async def test_the_end_of_an_attempt_leaves_the_next_attempt_of_its_job_alone() -> None:
    """A job snoozed for 0 s (or retried at once) may be claimed again before its last attempt's
    end has been seen: that end must not forget the new attempt, or its run is lost."""
    from aio_async.executor import _Running
    from aio_async.values import Attempt

    executor = Executor(settings=get_settings(), store=MemoryStore([], concurrency=2))
    first, second = Attempt(7, 1, "n", [], {}), Attempt(7, 2, "n", [], {})
    ended: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
    ended.set_result(Outcome.SNOOZED)
    running: asyncio.Task[Outcome] = asyncio.ensure_future(asyncio.sleep(0, Outcome.SUCCEEDED))
    executor._running[7] = _Running(second, running, second.context("w"))
    executor._finished(first, ended)  # type: ignore[arg-type]
    assert executor._running[7].attempt is second
    await running


def test_pickup_delays_keep_their_count_and_longest_exactly_and_a_bounded_sample_for_the_median() -> None:
    pickups = _Pickups()
    assert pickups.median() is None
    started = datetime.datetime(2026, 12, 7, tzinfo=datetime.UTC)
    delays = [index / 1000 for index in range(3 * PICKUP_SAMPLE)]
    claims = [delays[index : index + 4] for index in range(0, len(delays), 4)]  # four jobs a claim
    for claim in claims:
        attempts = [
            Attempt(index, 1, "job", [], {}, started=started, due=started - datetime.timedelta(seconds=delay))
            for index, delay in enumerate(claim)
        ]
        pickups.claimed(attempts)
    assert pickups.count == len(delays)
    assert pickups.longest == pytest.approx(delays[-1])
    assert PICKUP_SAMPLE // 2 <= len(pickups.sample) < PICKUP_SAMPLE  # bounded, evenly thinned
    median = pickups.median()
    assert median is not None
    # An even sample of 12288 delays spread evenly: its median is near the true one (6.144 s).
    assert abs(median - 6.144) < 0.1, median

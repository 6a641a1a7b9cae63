"""Jobs made of durable steps, sleeps and waits for events (``aio_async.steps``)."""

from __future__ import annotations

import datetime
import os
import signal
import time
from pathlib import Path
from typing import Any

from django.db import transaction

import aio_async
from aio_async import current_job
from tests.app.models import Record


def record(key: str, value: int = 0) -> int:
    """Write a Record; its id."""
    return Record.objects.create(key=key, value=value).pk


def record_then_fail(key: str) -> None:
    """Write a Record, then raise: the step's writes roll back."""
    Record.objects.create(key=key)
    raise ValueError(f"step failed after writing {key}")


def fail_until(key: str, marker: str) -> str:
    """Write a Record; raise until the file ``marker`` exists (so a step fails, then succeeds)."""
    Record.objects.create(key=key)
    if not Path(marker).exists():
        raise RuntimeError(f"no {marker} yet")
    return "passed"


def three_steps(key: str) -> list[Any]:
    """Three steps, each writing one Record; the job returns their results."""
    first = aio_async.step("one", record, f"{key}-1")
    second = aio_async.step("two", record, f"{key}-2")
    third = aio_async.step("three", record, f"{key}-3")
    return [first, second, third]


def steps_then_fail_once(key: str, marker: str) -> list[Any]:
    """Step one, then a step that fails until ``marker`` exists, then a last step."""
    first = aio_async.step("one", record, f"{key}-1")
    second = aio_async.step("two", fail_until, f"{key}-2", marker)
    third = aio_async.step("three", record, f"{key}-3")
    return [first, second, third]


def write_between_steps(key: str) -> int:
    """A write outside steps: it commits with the next step, once."""
    Record.objects.create(key=f"{key}-before")
    aio_async.step("one", record, f"{key}-1")
    Record.objects.create(key=f"{key}-between")
    value = aio_async.step("two", fail_until, f"{key}-2", f"/nonexistent/{key}")
    return len(value)


def step_twice(key: str) -> None:
    """Two steps with one name: refused."""
    aio_async.step("same", record, f"{key}-1")
    aio_async.step("same", record, f"{key}-2")


def step_in_atomic(key: str) -> None:
    """A step inside the job's own atomic block: refused."""
    with transaction.atomic():
        aio_async.step("inside", record, key)


def renamed_steps(key: str, version: int) -> list[Any]:
    """Version 1 runs steps a, b, then fails; version 2 renamed b to c; version 3 removed b."""
    first = aio_async.step("a", record, f"{key}-a")
    if version == 1:
        aio_async.step("b", record, f"{key}-b")
        raise RuntimeError("version 1 fails after its steps")
    if version == 3:  # step b removed, and nothing after it
        return [first]
    return [first, aio_async.step("c", record, f"{key}-c")]


def sleep_between(key: str, seconds: float) -> int:
    """A step, a durable sleep, a step."""
    aio_async.step("before", record, f"{key}-before")
    aio_async.sleep("nap", datetime.timedelta(seconds=seconds))
    return aio_async.step("after", record, f"{key}-after")


def wait_between(key: str, event: str, timeout: float | None) -> Any:
    """A step, a wait for ``event``, a step that records its payload."""
    aio_async.step("before", record, f"{key}-before")
    payload = aio_async.wait_for("approval", event, timeout=timeout)
    aio_async.step("after", record, f"{key}-after", int(payload["value"]))
    return payload


def wait_catching_timeout(event: str, timeout: float) -> str:
    """A wait whose timeout the job catches: it goes on."""
    try:
        aio_async.wait_for("approval", event, timeout=timeout)
    except aio_async.EventTimeout:
        return "timed out"
    return "received"


def pause_in_step(key: str, folder: str) -> int:
    """Step one, then a step that writes, notes its pid and sleeps long (a test stops or kills it)."""

    def noted() -> int:
        pk = Record.objects.create(key=f"{key}-2").pk
        Path(folder, f"{current_job().attempt}.pid").write_text(str(os.getpid()))
        time.sleep(float(os.environ.get("STEP_PAUSE", "30")))
        return pk

    aio_async.step("one", record, f"{key}-1")
    aio_async.step("two", noted)
    return aio_async.step("three", record, f"{key}-3")


def kill_in_step(key: str, folder: str) -> list[Any]:
    """Three steps; the second kills its own worker (SIGKILL) on the job's first attempts."""

    def second() -> int:
        pk = Record.objects.create(key=f"{key}-2").pk
        marker = Path(folder, f"{key}.{current_job().attempt}")
        marker.write_text("")
        if current_job().attempt <= int(os.environ.get("KILL_ATTEMPTS", "1")):
            os.kill(os.getpid(), signal.SIGKILL)
        return pk

    first = aio_async.step("one", record, f"{key}-1")
    middle = aio_async.step("two", second)
    last = aio_async.step("three", record, f"{key}-3")
    return [first, middle, last]


# Coroutine jobs ---------------------------------------------------------------------------


async def athree_steps(key: str) -> list[Any]:
    """Three steps of a coroutine job: sync functions (each in a transaction), then a coroutine."""
    first = await aio_async.astep("one", record, f"{key}-1")
    second = await aio_async.astep("two", record_then_fail_if, f"{key}-2", f"/nonexistent/{key}")
    third = await aio_async.astep("three", _ahello, key)
    return [first, second, third]


def record_then_fail_if(key: str, marker: str) -> int:
    """Write; fail when ``marker`` does exist (never, unless a test makes it)."""
    pk = Record.objects.create(key=key).pk
    if Path(marker).exists():
        raise RuntimeError("marker found")
    return pk


async def _ahello(key: str) -> str:
    return f"hello {key}"


async def asleep_between(key: str, seconds: float) -> int:
    """A coroutine job's step, durable sleep, step."""
    await aio_async.astep("before", record, f"{key}-before")
    await aio_async.asleep("nap", seconds)
    after: int = await aio_async.astep("after", record, f"{key}-after")
    return after


async def await_between(key: str, event: str, timeout: float | None) -> Any:  # noqa: ASYNC109
    """A coroutine job's wait for ``event`` between two steps."""
    await aio_async.astep("before", record, f"{key}-before")
    payload = await aio_async.await_for("approval", event, timeout=timeout)
    await aio_async.astep("after", record, f"{key}-after", int(payload["value"]))
    return payload


async def wrong_kind() -> None:
    """A coroutine job calling the sync step(): refused."""
    aio_async.step("sync", record, "x")


def sleep_then_wait(key: str, seconds: float, event: str) -> Any:
    """A durable sleep, then a wait for ``event`` (sent, perhaps, while it slept)."""
    aio_async.sleep("nap", seconds)
    payload = aio_async.wait_for("approval", event)
    aio_async.step("after", record, f"{key}-after")
    return payload

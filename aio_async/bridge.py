"""What crosses the line from the loop to Django's sync ORM: a sync job's attempt in a thread.

A sync job runs in a worker thread (``sync_to_async(thread_sensitive=False)``): its own work
and its fenced completion write happen inside one ``transaction.atomic()`` in one sync
function, because the next bridged call may land on another thread and connection (DESIGN
promise 2). A failure is recorded after the rollback, in a new transaction, on the same
thread and connection.

A worker thread is not a request: its connection stays open from job to job whatever
``CONN_MAX_AGE`` says (that setting is for web processes, where connections come and go with
requests), and is closed only when it broke or, after a long idle spell, fails its health
check. A connection is never shared between threads.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
from collections.abc import Callable
from typing import Any

from django.db import DatabaseError, connections, transaction
from django.utils import timezone

from aio_async import steps
from aio_async.conf import QueueSettings
from aio_async.errors import EventTimeout, Snooze, StepError
from aio_async.payload import result_value
from aio_async.store import journal, operations
from aio_async.store.dialects import for_vendor
from aio_async.store.drivers.django import connection_lost, run, run_on, tidy_connections
from aio_async.values import Attempt, Checkpoint, ErrorInfo, Outcome

__all__ = ["JobThread", "NoConnection", "Segment"]


class NoConnection(Exception):
    """The job's thread could not reach the database before the job started."""


class _NotCommitted(Exception):
    """The job returned past its deadline, or its lease was taken over: its work rolls back."""


class Segment:
    """A sync job's transaction from its start (or its last step) to its next step (or its end).

    A step, a durable sleep or a wait commits it and opens the next (``steps.StepScribe``);
    the job's end commits the last one with its completion. Without steps, it is the one
    transaction a sync job always ran in.
    """

    def __init__(self, alias: str) -> None:
        self.alias = alias
        self.block: transaction.Atomic | None = None

    def begin(self) -> None:
        """Open the next transaction."""
        self.block = transaction.atomic(using=self.alias)
        self.block.__enter__()

    def end(self, *, commit: bool) -> None:
        """Commit (or roll back) the transaction open now, if one is."""
        block, self.block = self.block, None
        if block is None:
            return
        if not commit:
            transaction.set_rollback(True, using=self.alias)
        block.__exit__(None, None, None)

    def renew(self, *, commit: bool) -> None:
        """End this transaction and open the next."""
        self.end(commit=commit)
        self.begin()

    def check(self, what: str) -> None:
        """StepError unless the job's own transaction is the innermost: a step cannot commit in atomic()."""
        blocks = connections[self.alias].atomic_blocks
        if self.block is None or not blocks or blocks[-1] is not self.block:
            raise StepError(
                f"{what} commits its work, so it cannot run inside transaction.atomic(): call it from "
                "the job's function itself, and put the atomic block inside the step"
            )


@dataclasses.dataclass(frozen=True)
class JobThread:
    """Runs sync jobs' attempts in the calling thread, for one worker."""

    alias: str
    worker_id: str
    settings: QueueSettings

    def run(
        self, attempt: Attempt, call: Callable[[], Any], returned: Callable[[], None] = lambda: None
    ) -> tuple[Outcome, ErrorInfo | None]:
        """Run ``call`` and the attempt's completion in one transaction; record a failure after.

        ``returned`` is called as soon as the job's function returned or raised, before the
        commit: the worker may claim the next job for this slot meanwhile. A job that returns
        past its deadline (``started + timeout``) is not committed: the worker has failed it
        already. NoConnection is raised, with nothing written, when the database cannot be
        reached before the job starts.
        """
        tidy_connections()
        connection = connections[self.alias]
        try:
            connection.ensure_connection()
        except DatabaseError as exc:
            raise NoConnection(str(exc)) from exc
        dialect = for_vendor(connection.vendor)
        segment = Segment(self.alias)
        entered = steps.enter(functools.partial(steps.StepScribe, self, attempt, segment))
        try:
            try:
                segment.begin()
                try:
                    try:
                        result = result_value(call())
                    finally:
                        returned()
                    if self._overran(attempt):
                        raise _NotCommitted
                    now = timezone.now()
                    held = run_on(
                        connection, operations.complete(dialect, [(attempt, result)], self.worker_id, now)
                    )
                    if not held:
                        raise _NotCommitted  # the lease was taken over
                except BaseException:
                    segment.end(commit=False)
                    raise
                segment.end(commit=True)
            except _NotCommitted:
                return Outcome.LEASE_LOST, None
            except steps.Stopped as stopped:  # a durable sleep or wait, committed; or the lease lost
                return stopped.outcome, None
            except Snooze as snoozed:  # its work rolled back; back to the queue, for later
                return self.record_snooze(attempt, snoozed.seconds), None
            except BaseException as exc:  # noqa: BLE001 - SystemExit in a job must not stop the worker
                error = ErrorInfo.from_exception(exc)
                lost = connection_lost(exc, self.alias)
                final = isinstance(exc, EventTimeout)
            else:
                return Outcome.SUCCEEDED, None
            # A connection that died under the job (a database restart, a killed backend) is
            # not the job's fault: it is retried at once, on a new connection.
            return self.record_failure(attempt, error, retry_now=lost, final=final), error
        finally:
            steps.leave(entered)
            tidy_connections()

    def run_step(self, attempt: Attempt, point: Checkpoint, call: Callable[[], Any]) -> tuple[bool, Any]:
        """A coroutine job's step: run ``call`` and commit ``point`` with its writes, under the fence.

        Returns (False, None), with nothing committed, when the attempt no longer holds its job.
        The step's exception is raised after the rollback.
        """
        tidy_connections()
        try:
            with transaction.atomic(using=self.alias):
                point.result = steps.stored(call())
                point.ended = timezone.now()
                lease_end = point.ended + datetime.timedelta(seconds=self.settings.lease_seconds)
                if not run(
                    lambda dialect: journal.checkpoint(dialect, attempt, self.worker_id, point, lease_end),
                    self.alias,
                ):
                    raise _NotCommitted
        except _NotCommitted:
            return False, None
        finally:
            tidy_connections()
        return True, point.result

    def _overran(self, attempt: Attempt) -> bool:
        if attempt.timeout is None or attempt.started is None:
            return False
        return timezone.now() > attempt.started + datetime.timedelta(seconds=attempt.timeout)

    def record_snooze(self, attempt: Attempt, seconds: float) -> Outcome:
        """Requeue a job that raised Snooze, in a new transaction on this thread's connection."""
        now = timezone.now()
        later = now + datetime.timedelta(seconds=seconds)
        with transaction.atomic(using=self.alias):
            held = run(
                lambda dialect: operations.snooze(dialect, attempt, self.worker_id, later, now), self.alias
            )
        return Outcome.SNOOZED if held else Outcome.LEASE_LOST

    def record_failure(
        self, attempt: Attempt, error: ErrorInfo, *, final: bool = False, retry_now: bool = False
    ) -> Outcome:
        """Record a failed attempt in a new transaction on this thread's connection."""
        tidy_connections()
        now = timezone.now()
        decided = operations.verdict(attempt, self.settings, now, final=final, retry_now=retry_now)
        with transaction.atomic(using=self.alias):
            recorded = run(
                lambda dialect: operations.fail(dialect, attempt, error, self.worker_id, decided, now),
                self.alias,
            )
        if not recorded:
            return Outcome.LEASE_LOST
        return Outcome.FAILED if decided.give_up else Outcome.RETRYING

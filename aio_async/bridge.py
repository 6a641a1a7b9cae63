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
import threading
import time
from collections.abc import Callable
from typing import Any

from django.db import DatabaseError, InterfaceError, OperationalError, connections, transaction
from django.utils import timezone

from aio_async import operations, sql
from aio_async.conf import QueueSettings
from aio_async.errors import ResultNotJSON, Snooze
from aio_async.operations import Attempt, ErrorInfo, Outcome
from aio_async.payload import JSONError, json_value

__all__ = ["JobThread", "NoConnection", "connection_lost", "result_value", "tidy_connections"]

#: A job thread's connection idle for longer than this is checked before it is used again.
HEALTH_CHECK_AFTER = 30.0

_idle_since = threading.local()


class NoConnection(Exception):
    """The job's thread could not reach the database before the job started."""


class _NotCommitted(Exception):
    """The job returned past its deadline, or its lease was taken over: its work rolls back."""


def tidy_connections() -> None:
    """Close this thread's connections that broke, or that fail a check after a long idle spell.

    Django's ``close_old_connections()`` would also close them when they outlive
    ``CONN_MAX_AGE``, which is 0 by default: a new connection per job. A worker keeps them.
    """
    idle = time.monotonic() - getattr(_idle_since, "moment", time.monotonic())
    for connection in connections.all(initialized_only=True):
        if connection.connection is None or connection.in_atomic_block:
            continue
        connection.close_at = None  # a worker thread is not a request: CONN_MAX_AGE is not for it
        if idle > HEALTH_CHECK_AFTER:
            connection.errors_occurred = True  # have Django check it with a round trip
        connection.close_if_unusable_or_obsolete()
    _idle_since.moment = time.monotonic()


def connection_lost(exc: BaseException, alias: str) -> bool:
    """True when ``exc`` came from a database connection that is now closed or unusable."""
    if not isinstance(exc, OperationalError | InterfaceError):
        return False
    connection = connections[alias]
    return connection.connection is None or not connection.is_usable()


def result_value(value: object) -> Any:
    """A job's return value as stored JSON, or ResultNotJSON."""
    try:
        return json_value(value, "the result")
    except JSONError as exc:
        raise ResultNotJSON(f"{exc}; return JSON (or nothing) from a job") from None


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
        dialect = sql.for_vendor(connection.vendor)
        try:
            try:
                with transaction.atomic(using=self.alias):
                    try:
                        result = result_value(call())
                    finally:
                        returned()
                    if self._overran(attempt):
                        raise _NotCommitted
                    now = timezone.now()
                    held = sql.run_on(
                        connection, operations.complete(dialect, [(attempt, result)], self.worker_id, now)
                    )
                    if not held:
                        raise _NotCommitted  # the lease was taken over
            except _NotCommitted:
                return Outcome.LEASE_LOST, None
            except Snooze as snoozed:  # its work rolled back; back to the queue, for later
                return self.record_snooze(attempt, snoozed.seconds), None
            except BaseException as exc:  # noqa: BLE001 - SystemExit in a job must not stop the worker
                error = ErrorInfo.from_exception(exc)
                lost = connection_lost(exc, self.alias)
            else:
                return Outcome.SUCCEEDED, None
            # A connection that died under the job (a database restart, a killed backend) is
            # not the job's fault: it is retried at once, on a new connection.
            return self.record_failure(attempt, error, retry_now=lost), error
        finally:
            tidy_connections()

    def _overran(self, attempt: Attempt) -> bool:
        if attempt.timeout is None or attempt.started is None:
            return False
        return timezone.now() > attempt.started + datetime.timedelta(seconds=attempt.timeout)

    def record_snooze(self, attempt: Attempt, seconds: float) -> Outcome:
        """Requeue a job that raised Snooze, in a new transaction on this thread's connection."""
        connection = connections[self.alias]
        later = timezone.now() + datetime.timedelta(seconds=seconds)
        op = operations.snooze(sql.for_vendor(connection.vendor), attempt, self.worker_id, later)
        with transaction.atomic(using=self.alias):
            held = sql.run_on(connection, op)
        return Outcome.SNOOZED if held else Outcome.LEASE_LOST

    def record_failure(
        self, attempt: Attempt, error: ErrorInfo, *, final: bool = False, retry_now: bool = False
    ) -> Outcome:
        """Record a failed attempt in a new transaction on this thread's connection."""
        tidy_connections()
        now = timezone.now()
        decided = operations.verdict(attempt, self.settings, now, final=final, retry_now=retry_now)
        connection = connections[self.alias]
        op = operations.fail(sql.for_vendor(connection.vendor), attempt, error, self.worker_id, decided, now)
        with transaction.atomic(using=self.alias):
            recorded = sql.run_on(connection, op)
        if not recorded:
            return Outcome.LEASE_LOST
        return Outcome.FAILED if decided.give_up else Outcome.RETRYING

"""Running the queue's statements on one of Django's connections.

``run_on`` runs an operation (a sequence of statements) on a connection, in the caller's
transaction: a sync job's completion inside its own transaction, ``schedule()`` inside the
caller's, the queue's bookkeeping on SQLite. ``DjangoConnector`` runs operations for a worker
on the thread of Django's async ORM. ``tidy_connections`` is the connection hygiene of every
thread a worker owns.
"""

from __future__ import annotations

import datetime
import functools
import logging
import threading
import time
from collections.abc import AsyncIterator
from typing import Any, TypeVar, cast

from asgiref.sync import sync_to_async
from django.db import InterfaceError, OperationalError, connections, transaction
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.backends.utils import CursorDebugWrapper, CursorWrapper

from aio_async.conf import get_settings
from aio_async.store.dialects import for_vendor
from aio_async.store.protocol import Notice
from aio_async.store.statements import MakeOp, Op

__all__ = [
    "DjangoConnector",
    "connection_lost",
    "cursor",
    "prepared",
    "psycopg3",
    "run",
    "run_on",
    "tidy_connections",
]

logger = logging.getLogger("aio_async.store")

_R = TypeVar("_R")
R = TypeVar("R")

#: A job thread's connection idle for longer than this is checked before it is used again.
HEALTH_CHECK_AFTER = 30.0

_idle_since = threading.local()


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


def prepared(connection: BaseDatabaseWrapper) -> bool:
    """Whether the queue's own statements run prepared on ``connection``.

    They do on PostgreSQL with psycopg 3, whatever Django's ``OPTIONS`` say, unless the
    database's ``OPTIONS`` set ``"prepare_threshold": None`` themselves (a pooler in
    transaction mode that cannot keep prepared statements) or ``AIO_ASYNC["PREPARED"]`` is off.
    """
    if connection.vendor != "postgresql" or not psycopg3():
        return False
    options = connection.settings_dict.get("OPTIONS") or {}
    if "prepare_threshold" in options and options["prepare_threshold"] is None:
        return False
    return get_settings().prepared


@functools.cache
def psycopg3() -> bool:
    """True when Django's PostgreSQL backend runs on psycopg 3 (not psycopg2, not absent)."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return False
    from django.db.backends.postgresql.psycopg_any import is_psycopg3

    return bool(is_psycopg3)


def cursor(connection: BaseDatabaseWrapper) -> CursorWrapper:
    """A cursor on ``connection`` (in its transaction) for the queue's own statements.

    On PostgreSQL with psycopg 3 it binds values on the server and prepares each statement
    (see ``prepared``), where Django's own cursors quote every value into the SQL text and
    so can never run a prepared statement. It is wrapped as Django wraps its own (query
    logging, execute wrappers, Django's exceptions).
    """
    if connection.vendor != "postgresql" or not psycopg3():
        return connection.cursor()
    connection.ensure_connection()
    connection.validate_thread_sharing()
    prepare = prepared(connection)
    raw = connection.connection
    if prepare and raw.prepare_threshold is None:
        # psycopg ignores prepare=True on a connection whose threshold is None, as Django sets
        # it by default. A threshold too high to be reached prepares only what asks to be.
        raw.prepare_threshold = _NEVER_BY_COUNT
    if connection.queries_logged:
        # psycopg keeps no query text for a prepared statement, and Django before 6.1 then
        # logs None: where queries are logged (DEBUG, CaptureQueriesContext) nothing is prepared.
        return CursorDebugWrapper(_cursor_classes()[False](raw), connection)
    return CursorWrapper(_cursor_classes()[prepare](raw), connection)


_NEVER_BY_COUNT = 2**31 - 1


@functools.cache
def _cursor_classes() -> dict[bool, type[Any]]:
    """psycopg cursors that bind on the server: one that prepares every statement, one that does not."""
    import psycopg

    class Prepared(psycopg.Cursor[Any]):
        def execute(self, query: Any, params: Any = None, *, prepare: bool | None = None, **kw: Any) -> Any:
            return super().execute(query, params, prepare=True if prepare is None else prepare, **kw)

    return {True: Prepared, False: psycopg.Cursor}


def run_on(connection: BaseDatabaseWrapper, op: Op[_R]) -> _R:
    """Run ``op`` on ``connection``, in the caller's transaction; return its result.

    Datetimes are adapted as Django stores them (SQLite keeps text).
    """
    adapt = connection.ops.adapt_datetimefield_value
    with cursor(connection) as db:
        try:
            text, params = next(op)
            while True:
                db.execute(text, [adapt(p) if isinstance(p, datetime.datetime) else p for p in params])
                text, params = op.send(db.fetchall() if db.description else [])
        except StopIteration as stop:
            return cast(_R, stop.value)


def run(make: MakeOp[_R], using: str) -> _R:
    """Run the operation ``make(dialect)`` on Django's connection ``using``, in the caller's transaction."""
    connection = connections[using]
    return run_on(connection, make(for_vendor(connection.vendor)))


class DjangoConnector:
    """Runs operations on Django's connection, on the thread of Django's async ORM.

    That thread keeps its connection whatever ``CONN_MAX_AGE`` says, and replaces it only
    once it broke. Each operation runs whole in one call on the thread, so that the
    coroutine jobs' own queries on that thread never land inside its transaction.
    """

    def __init__(self, alias: str) -> None:
        self.alias = alias
        self.dialect = for_vendor(connections[alias].vendor)
        self._on_thread = sync_to_async(self._run, thread_sensitive=True)

    async def run(self, make: MakeOp[R], *, atomic: bool = False, retry: bool = False) -> R:
        """Run the operation ``make(dialect)``; with ``retry``, once more if the connection was dead."""
        return await self._on_thread(make, atomic, retry)

    def _run(self, make: MakeOp[R], atomic: bool, retry: bool) -> R:
        tidy_connections()
        try:
            return self._once(make, atomic)
        except (OperationalError, InterfaceError) as exc:
            if not (retry and connection_lost(exc, self.alias)):
                raise
            logger.info("Reconnecting after %s", exc, extra={"action": "reconnect"})
            connections[self.alias].close()
            return self._once(make, atomic)

    def _once(self, make: MakeOp[R], atomic: bool) -> R:
        connection = connections[self.alias]
        if not atomic:
            return run_on(connection, make(self.dialect))
        with transaction.atomic(using=self.alias):
            return run_on(connection, make(self.dialect))

    def listen(self) -> AsyncIterator[Notice] | None:
        """None: Django's connections cannot wait for notifications; the worker polls."""
        return None

    async def close(self) -> None:
        """Nothing of its own: the store closes the async ORM thread's connections."""

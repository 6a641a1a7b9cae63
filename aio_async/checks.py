"""System checks: a misconfigured queue is reported by ``manage.py check``, not at 3 a.m.

======== ======= ============================================ ===================================
id       level   what                                         fix
======== ======= ============================================ ===================================
E001     Error   ``AIO_ASYNC`` is invalid (an unknown key, a  Correct the key the message names;
                 bad value), or its ``DATABASE`` is neither   point ``DATABASE`` at a PostgreSQL
                 PostgreSQL nor SQLite.                       or SQLite alias.
E002     Error   ``AIO_ASYNC["DATABASE"]`` is not an alias    Name an alias of ``DATABASES``:
                 of ``DATABASES``.                            the one with aio_async's tables.
E003     Error   ``AIO_ASYNC["METRICS_PORT"]`` is set, and    ``pip install 'aio_async[prometheus]'``,
                 prometheus_client is not installed.          or leave ``METRICS_PORT`` out.
W001     Warning An ``AIO_ASYNC["ALLOWED_MODULES"]`` entry    Correct the entry's dotted path (or
                 does not import (one warning per entry).     install what it imports), or drop it.
W002     Warning The queue database is SQLite without         ``"transaction_mode": "IMMEDIATE"``
                 ``transaction_mode`` IMMEDIATE (or           in the alias's ``OPTIONS``.
                 EXCLUSIVE).
W003     Warning The queue database is SQLite with a busy     ``"timeout"`` in ``OPTIONS`` of at
                 ``timeout`` (Python's default: 5 s) shorter  least the heartbeat interval.
                 than the interval between lease renewals.
W004     Warning On SQLite, ``LEASE_SECONDS`` is shorter      Raise ``LEASE_SECONDS`` (the message
                 than the busy ``timeout`` plus the           gives the least), or lower the
                 heartbeat interval.                          timeout.
W005     Warning A NOTIFY does not reach a LISTEN on the      ``AIO_ASYNC["LISTEN"]``: a direct
                 database the workers listen on (a pooler     connection's alias, or False to
                 in transaction mode): probed, with           poll. Runs with
                 ``check --database``.                        ``check --database``, and at a
                                                              worker's start (logged).
I001     Info    A task registered with a queue that          A worker with ``--queue NAME``, or
                 ``AIO_ASYNC["QUEUES"]`` does not serve.      the queue in ``QUEUES`` (``"*"``).
======== ======= ============================================ ===================================

The ids are ``aio_async.`` followed by the above. ``aio_async.W010`` (``TASKS`` queues that no
worker serves) is the Tasks backend's own check, in ``aio_async.backends``.

I001 runs with ``manage.py check --deploy`` only (every command would print it otherwise),
and is information, not a warning: ``QUEUES`` is only what ``run`` serves by default, and a
project that starts a dedicated ``run --queue mail`` worker is configured correctly; the
worker itself, which knows its queues, warns at start about the tasks it will not run.

None of these checks opens a database connection: they read settings, and a connection
wrapper's ``vendor`` and ``settings_dict``. A Tasks backend configured while ``aio_async`` is
missing from ``INSTALLED_APPS`` cannot be checked here: these checks are registered by the
app's ``ready()``, and ``aio_async.backends`` cannot even be imported without the app.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from django.conf import settings as django_settings
from django.core import checks
from django.core.exceptions import ImproperlyConfigured
from django.db import connections

from aio_async.conf import QueueSettings, get_settings, parse_settings
from aio_async.startup import unserved_queues
from aio_async.store.dialects import for_vendor
from aio_async.store.drivers.django import psycopg3
from aio_async.store.preflight import listen_problems

__all__ = [
    "SQLITE_DEFAULT_TIMEOUT",
    "check_allowed_modules",
    "check_metrics",
    "check_settings",
    "check_sqlite",
    "check_unserved_queues",
    "import_problem",
    "sqlite_messages",
]

#: The busy timeout of Python's ``sqlite3.connect()`` when ``OPTIONS`` sets none, in seconds.
SQLITE_DEFAULT_TIMEOUT = 5.0
#: Transaction modes that take SQLite's write lock at BEGIN.
_WRITING_MODES = ("IMMEDIATE", "EXCLUSIVE")
#: The most task names one I001 message lists.
_MAX_NAMES = 5


def _current() -> QueueSettings | None:
    """The validated settings, or None when they are invalid (E001 and E002 report that)."""
    try:
        return get_settings()
    except ImproperlyConfigured:
        return None


# Settings and database -------------------------------------------------------------------


@checks.register(checks.Tags.compatibility)
def check_settings(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """AIO_ASYNC is valid, its DATABASE an alias of DATABASES, and that database PostgreSQL or SQLite."""
    raw = getattr(django_settings, "AIO_ASYNC", None)
    if isinstance(raw, Mapping) and "DATABASE" in raw and not _is_alias(raw["DATABASE"]):
        messages: list[checks.CheckMessage] = [_unknown_alias(raw["DATABASE"])]
        try:  # the other keys, so that one run reports every problem
            parse_settings({key: value for key, value in raw.items() if key != "DATABASE"})
        except ImproperlyConfigured as exc:
            messages.append(_invalid(exc))
        return messages
    try:
        settings = get_settings()
    except ImproperlyConfigured as exc:
        return [_invalid(exc)]
    try:
        for_vendor(connections[settings.database].vendor)
    except (ImproperlyConfigured, ValueError) as exc:
        return [
            checks.Error(
                f"AIO_ASYNC['DATABASE'] is {settings.database!r}: {exc}.",
                hint="Point AIO_ASYNC['DATABASE'] at an alias of DATABASES whose ENGINE is "
                "PostgreSQL or SQLite, and run aio_async's migrations there.",
                id="aio_async.E001",
            )
        ]
    return []


def _is_alias(value: object) -> bool:
    return isinstance(value, str) and value in django_settings.DATABASES


def _invalid(exc: ImproperlyConfigured) -> checks.CheckMessage:
    return checks.Error(
        str(exc),
        hint="Correct the AIO_ASYNC key the message names; the README documents every key and its type.",
        id="aio_async.E001",
    )


def _unknown_alias(value: object) -> checks.CheckMessage:
    aliases = ", ".join(map(repr, django_settings.DATABASES)) or "none"
    return checks.Error(
        f"AIO_ASYNC['DATABASE'] is {value!r}, which is not an alias of DATABASES (aliases: {aliases}).",
        hint="Set AIO_ASYNC['DATABASE'] to the alias of the database that holds aio_async's "
        "tables, or leave it out for 'default'.",
        id="aio_async.E002",
    )


@checks.register(checks.Tags.compatibility)
def check_metrics(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """With AIO_ASYNC['METRICS_PORT'] set, prometheus_client imports (or ``run`` would refuse)."""
    settings = _current()
    if settings is None or settings.metrics_port is None:
        return []
    try:
        importlib.import_module("prometheus_client")
    except ImportError:
        return [
            checks.Error(
                f"AIO_ASYNC['METRICS_PORT'] is {settings.metrics_port}, and prometheus_client is "
                "not installed: every worker would refuse to start.",
                hint="pip install 'aio_async[prometheus]', or remove AIO_ASYNC['METRICS_PORT'].",
                id="aio_async.E003",
            )
        ]
    return []


# The allow-list ------------------------------------------------------------------------


@checks.register(checks.Tags.compatibility)
def check_allowed_modules(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """Each AIO_ASYNC['ALLOWED_MODULES'] entry imports: a module, or an attribute of one."""
    settings = _current()
    if settings is None or settings.allowed_modules is None:
        return []  # unset: the installed apps, which Django has imported already
    messages: list[checks.CheckMessage] = []
    for entry in settings.allowed_modules:
        problem = import_problem(entry)
        if problem is not None:
            messages.append(
                checks.Warning(
                    f"AIO_ASYNC['ALLOWED_MODULES'] entry {entry!r} does not import: {problem}.",
                    hint="Correct its dotted path (such as 'myapp.tasks'), install what it "
                    "imports, or remove it: no job under it can run while it does not import.",
                    id="aio_async.W001",
                )
            )
    return messages


def import_problem(dotted: str) -> str | None:
    """Why ``dotted`` (a module, or an attribute inside one) does not import; None when it does."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        module_name = ".".join(parts[:cut])
        try:
            found: object = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            missing = exc.name or ""
            if missing and (module_name == missing or module_name.startswith(missing + ".")):
                continue  # this prefix is no module; the rest may be attributes of a shorter one
            return f"importing {module_name} failed: {exc}"
        except Exception as exc:  # noqa: BLE001 - whatever the import raises is the problem to report
            return f"importing {module_name} failed: {type(exc).__name__}: {exc}"
        for attribute in parts[cut:]:
            if not hasattr(found, attribute):
                return f"{module_name} has no attribute {attribute!r}"
            found = getattr(found, attribute)
            module_name = f"{module_name}.{attribute}"
        return None
    return f"no module named {parts[0]!r}"


# SQLite ----------------------------------------------------------------------------------


@checks.register(checks.Tags.compatibility)
def check_sqlite(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """On a SQLite queue database: IMMEDIATE transactions, and a busy timeout that fits the lease."""
    settings = _current()
    if settings is None:
        return []
    try:
        connection = connections[settings.database]  # a wrapper: reading it does not connect
    except ImproperlyConfigured:
        return []  # a bad ENGINE: E001 reports it
    if connection.vendor != "sqlite":
        return []
    return sqlite_messages(settings, connection.settings_dict.get("OPTIONS") or {})


def sqlite_messages(settings: QueueSettings, options: Mapping[str, Any]) -> list[checks.CheckMessage]:
    """The W002, W003 and W004 warnings for a SQLite queue database with these ``OPTIONS``."""
    where = f"DATABASES[{settings.database!r}]['OPTIONS']"
    messages: list[checks.CheckMessage] = []
    mode = options.get("transaction_mode")
    if not isinstance(mode, str) or mode.upper() not in _WRITING_MODES:
        current = "unset, so DEFERRED" if mode is None else repr(mode)
        messages.append(
            checks.Warning(
                f"The queue database {settings.database!r} is SQLite, and its transactions are "
                f"not IMMEDIATE ({where}['transaction_mode'] is {current}).",
                hint=f'Add "transaction_mode": "IMMEDIATE" to {where}, as aio_async\'s embedded '
                "settings do. A deferred transaction starts as a reader; when a job's "
                "transaction then writes while another connection is writing, SQLite cannot "
                "wait for the lock and fails at once with 'database is locked', whatever the "
                "timeout.",
                id="aio_async.W002",
            )
        )
    timeout = options.get("timeout", SQLITE_DEFAULT_TIMEOUT)
    if isinstance(timeout, bool) or not isinstance(timeout, int | float):
        return messages  # not a number: sqlite3.connect() itself refuses it
    heartbeat = settings.heartbeat_every
    current = f"{timeout:g} s" + ("" if "timeout" in options else ", Python's default")
    if timeout < heartbeat:
        messages.append(
            checks.Warning(
                f"The queue database {settings.database!r} is SQLite with a busy timeout of "
                f"{current}, shorter than the {heartbeat:g} s between lease renewals.",
                hint=f"Set {where}['timeout'] to at least {heartbeat:g} (seconds; aio_async's "
                "embedded settings use 20). SQLite lets one connection write at a time, and a "
                "queue write (a claim, a heartbeat, a job's completion) that waits longer than "
                "the timeout for the lock fails with 'database is locked' instead of waiting "
                "its turn.",
                id="aio_async.W003",
            )
        )
    if settings.lease_seconds < timeout + heartbeat:
        # With the default heartbeat (a third of the lease), LEASE ≥ timeout + LEASE / 3.
        least = timeout + heartbeat if settings.heartbeat_interval else timeout * 1.5
        messages.append(
            checks.Warning(
                f"AIO_ASYNC['LEASE_SECONDS'] ({settings.lease_seconds:g} s) is shorter than the "
                f"SQLite busy timeout of the queue database {settings.database!r} ({current}) "
                f"plus the heartbeat interval ({heartbeat:g} s).",
                hint=f"Raise AIO_ASYNC['LEASE_SECONDS'] to at least {least:g}, or lower "
                f"{where}['timeout'] (keeping it at least the heartbeat interval). A worker "
                "whose lease renewal waits on another connection's write lock can let its "
                "lease expire meanwhile, and its job, still running, is rescued and run again.",
                id="aio_async.W004",
            )
        )
    return messages


# Queues ----------------------------------------------------------------------------------


@checks.register(checks.Tags.compatibility, deploy=True)
def check_unserved_queues(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """Registered tasks whose queue AIO_ASYNC['QUEUES'] leaves out, one Info per queue."""
    settings = _current()
    if settings is None:
        return []
    messages: list[checks.CheckMessage] = []
    for queue, names in unserved_queues(settings).items():
        shown = ", ".join(names[:_MAX_NAMES])
        if len(names) > _MAX_NAMES:
            shown += f" and {len(names) - _MAX_NAMES} more"
        messages.append(
            checks.Info(
                f"Queue {queue!r} of task(s) {shown} is not in AIO_ASYNC['QUEUES'] "
                f"({list(settings.queues)}): a worker started without --queue leaves its jobs queued.",
                hint=f"Start a worker for it (python -m aio_async run --queue {queue}), or add "
                f"{queue!r} (or '*', every queue) to AIO_ASYNC['QUEUES'].",
                id="aio_async.I001",
            )
        )
    return messages


@checks.register(checks.Tags.database)
def check_listen(app_configs: Any = None, databases: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """With LISTEN on (PostgreSQL, psycopg 3), a NOTIFY reaches it: probed (``check --database``)."""
    settings = _current()
    if settings is None or settings.listen is False or not databases:
        return []
    alias = settings.listen if isinstance(settings.listen, str) else settings.database
    if alias not in databases or connections[alias].vendor != "postgresql" or not psycopg3():
        return []
    return [
        checks.Warning(
            problem,
            hint="Point AIO_ASYNC['LISTEN'] at a direct connection's alias, or set it to False.",
            id="aio_async.W005",
        )
        for problem in listen_problems(settings)
    ]

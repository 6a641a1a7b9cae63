"""What a worker checks before its first claim: migrations, LISTEN, connections to spare."""

from __future__ import annotations

import logging
import re

from django.core.exceptions import ImproperlyConfigured
from django.db import InterfaceError, OperationalError, connections
from django.db.migrations.loader import MigrationLoader

from aio_async.conf import QueueSettings
from aio_async.store.drivers.django import psycopg3

__all__ = ["listen_problems", "problems"]

logger = logging.getLogger("aio_async.store")

#: PostgreSQL's refusal of a connection to a database that does not exist (its English text).
_NO_SUCH_DATABASE = re.compile(r'database "[^"]*" does not exist')


def problems(settings: QueueSettings, needed: int, own: int) -> list[str]:
    """Refuse an unmigrated database; warn when LISTEN or the connections will fall short.

    ``needed`` connections are the worker's: its concurrency plus ``own`` of its own.
    """
    connection = connections[settings.database]
    try:
        loader = MigrationLoader(connection)
    except (OperationalError, InterfaceError) as exc:
        if _NO_SUCH_DATABASE.search(str(exc)):  # not an outage: waiting would wait for good
            name = connection.settings_dict.get("NAME")
            raise ImproperlyConfigured(
                f"database {settings.database!r} ({name!r}) does not exist on the server: "
                f"create it (createdb {name}) or fix DATABASES[{settings.database!r}]['NAME']"
            ) from None
        return [f"Cannot reach database {settings.database!r} yet ({exc}); waiting for it"]
    missing = sorted(
        name
        for app, name in loader.graph.nodes
        if app == "aio_async" and (app, name) not in loader.applied_migrations
    )
    if missing:
        raise ImproperlyConfigured(
            f"database {settings.database!r} lacks aio_async's migrations {', '.join(missing)}: "
            "run `python manage.py migrate` before starting a worker"
        )
    if connection.vendor != "postgresql":
        return []
    found: list[str] = []
    if not psycopg3():
        # Advice, not a problem: polling works, and -q (warnings only) hides it.
        logger.info(
            "Django runs on psycopg2 here: the worker cannot LISTEN, so it polls every %g s. "
            "Install psycopg 3 (pip install 'psycopg[binary]') to pick jobs up as they are committed.",
            settings.poll_interval,
            extra={"action": "polling_without_listen"},
        )
    elif settings.listen is not False:
        found += listen_problems(settings)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT current_setting('max_connections')::int - "
            "current_setting('superuser_reserved_connections')::int, "
            "(SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')"
        )
        allowed, in_use = cursor.fetchone()
    if needed <= allowed - in_use:
        return found
    return [
        *found,
        f"This worker needs up to {needed} database connections "
        f"(concurrency {needed - own} + {own}); the server allows {allowed} and {in_use} are "
        "in use: it will run fewer jobs at once when it cannot connect. Lower --concurrency or "
        "raise PostgreSQL's max_connections.",
    ]


def listen_problems(settings: QueueSettings) -> list[str]:
    """A warning when NOTIFY does not reach a LISTEN on the connection the worker listens on.

    Probed with two connections (PostgreSQL, psycopg 3): a pooler in transaction mode loses
    notifications, and the worker would then find jobs only by polling.
    """
    from aio_async.store.drivers.psycopg import listen_works  # psycopg 3 only: an optional extra

    alias = settings.listen if isinstance(settings.listen, str) else settings.database
    try:
        if listen_works(connections[alias]):
            return []
    except Exception:  # noqa: BLE001 - an unreachable database is reported where it matters
        return []
    return [
        f"A NOTIFY did not reach a LISTEN on database {alias!r} within 2 s: it goes through a "
        "pooler in transaction mode, or the like. Workers will find jobs only by polling every "
        f"{settings.poll_interval:g} s. Set AIO_ASYNC['LISTEN'] to the alias of a direct "
        "connection to the database, or to False to poll without trying."
    ]

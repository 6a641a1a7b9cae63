"""System checks: a misconfigured queue is reported by ``manage.py check``, not at 3 a.m."""

from __future__ import annotations

from typing import Any

from django.core import checks
from django.core.exceptions import ImproperlyConfigured
from django.db import connections

from aio_async import sql
from aio_async.conf import get_settings


@checks.register(checks.Tags.compatibility)
def check_settings(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """AIO_ASYNC is valid and its DATABASE is PostgreSQL or SQLite."""
    try:
        settings = get_settings()
        sql.for_vendor(connections[settings.database].vendor)
    except (ImproperlyConfigured, ValueError) as exc:
        return [checks.Error(str(exc), id="aio_async.E001")]
    return []

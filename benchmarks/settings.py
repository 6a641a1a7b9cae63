"""Django settings for the benchmark: the database named by ``BENCH_PG_DSN``.

``BENCH_CONFIG`` picks the database settings (the worker subprocesses inherit it):

- ``default``: what a Django project has for PostgreSQL out of the box: ENGINE, NAME, HOST,
  PORT, USER and PASSWORD only; no ``CONN_MAX_AGE`` (so 0), no ``OPTIONS``. The headline.
- ``tuned``: ``CONN_MAX_AGE = 600`` and ``OPTIONS = {"prepare_threshold": 5}`` on top.

``BENCH_SQLITE`` replaces the database with the embedded settings' SQLite on that file.
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import urlparse

from aio_async import embedded

CONFIGS = ("default", "tuned")
BENCH_CONFIG = os.environ.get("BENCH_CONFIG", "default")
if BENCH_CONFIG not in CONFIGS:
    raise ValueError(f"BENCH_CONFIG must be one of {', '.join(CONFIGS)}, not {BENCH_CONFIG!r}")
#: What each configuration adds to Django's default DATABASES entry.
TUNING: dict[str, dict[str, Any]] = {
    "default": {},
    # psycopg prepares a statement on its fifth run (its own default; Django turns it off for
    # connection poolers); CONN_MAX_AGE keeps the enqueuing process's connection.
    "tuned": {"CONN_MAX_AGE": 600, "OPTIONS": {"prepare_threshold": 5}},
}
_dsn = urlparse(os.environ.get("BENCH_PG_DSN", "postgresql://postgres@127.0.0.1:5432/aio_async_bench"))

SECRET_KEY = "benchmark-only"  # noqa: S105
USE_TZ = True
INSTALLED_APPS = ["django.contrib.contenttypes", "aio_async", "benchmarks"]
DATABASES: dict[str, dict[str, Any]] = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": _dsn.path.lstrip("/"),
        "HOST": _dsn.hostname or "127.0.0.1",
        "PORT": str(_dsn.port or 5432),
        "USER": _dsn.username or "postgres",
        "PASSWORD": _dsn.password or "",
        **TUNING[BENCH_CONFIG],
    }
}
if os.environ.get("BENCH_SQLITE"):  # the embedded settings' SQLite, on the benchmark's file
    BENCH_CONFIG = "sqlite"
    DATABASES = {"default": {**embedded.DATABASES["default"], "NAME": os.environ["BENCH_SQLITE"]}}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
AIO_ASYNC = {"POLL_INTERVAL": 1.0, "MAX_ATTEMPTS": 1}
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"aio_async": {"handlers": ["console"], "level": "WARNING"}},
}


def _described() -> str:
    """The database and queue settings as set here (before Django fills in its defaults)."""
    database = DATABASES["default"]
    base = ("ENGINE", "NAME", "HOST", "PORT", "USER", "PASSWORD")
    extra = ", ".join(f"{key}={value!r}" for key, value in database.items() if key not in base)
    if database["ENGINE"].endswith("sqlite3"):
        shown = f"aio_async.embedded's SQLite: ENGINE={database['ENGINE']!r}, {extra}"
    else:
        shown = f"ENGINE={database['ENGINE']!r}, NAME, HOST, PORT, USER, PASSWORD"
        shown += f", {extra}" if extra else " only"
    return f"DATABASES['default']: {shown}; AIO_ASYNC={AIO_ASYNC!r}"


#: One line for the results: this configuration's settings, as a reader would copy them.
BENCH_SETTINGS = _described()

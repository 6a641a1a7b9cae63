"""Django settings for the benchmark: the database named by ``BENCH_PG_DSN``."""

from __future__ import annotations

import os
from urllib.parse import urlparse

from aio_async import embedded

_PREPARE = os.environ.get("BENCH_PREPARE_THRESHOLD", "5")
_dsn = urlparse(os.environ.get("BENCH_PG_DSN", "postgresql://postgres@127.0.0.1:5432/aio_async_bench"))

SECRET_KEY = "benchmark-only"  # noqa: S105
USE_TZ = True
INSTALLED_APPS = ["django.contrib.contenttypes", "aio_async", "benchmarks"]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": _dsn.path.lstrip("/"),
        "HOST": _dsn.hostname or "127.0.0.1",
        "PORT": str(_dsn.port or 5432),
        "USER": _dsn.username or "postgres",
        "PASSWORD": _dsn.password or "",
        "CONN_MAX_AGE": 600,
        # psycopg prepares a statement on its fifth run (its own default; Django turns it off
        # for connection poolers). BENCH_PREPARE_THRESHOLD=off measures without.
        "OPTIONS": {"prepare_threshold": None if _PREPARE == "off" else int(_PREPARE)},
    }
}
if os.environ.get("BENCH_SQLITE"):  # the embedded settings' SQLite, on the benchmark's file
    DATABASES = {"default": {**embedded.DATABASES["default"], "NAME": os.environ["BENCH_SQLITE"]}}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
AIO_ASYNC = {"POLL_INTERVAL": 1.0, "MAX_ATTEMPTS": 1}
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"aio_async": {"handlers": ["console"], "level": "WARNING"}},
}

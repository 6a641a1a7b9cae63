"""Embedded default settings: a SQLite file in the current folder, for zero set-up.

Used by ``python -m aio_async`` when neither ``DJANGO_SETTINGS_MODULE`` nor ``--settings``
is given. ``AIO_ASYNC_SQLITE`` names another file.
"""

from __future__ import annotations

import os

SECRET_KEY = "aio-async-embedded-settings-not-for-production"  # noqa: S105 - no secrets here
DEBUG = False
USE_TZ = True
TIME_ZONE = "UTC"
INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "aio_async",
    "aio_async.demo",
]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("AIO_ASYNC_SQLITE", os.path.join(os.getcwd(), "aio_async.sqlite3")),
        "CONN_MAX_AGE": None,
        "OPTIONS": {
            "timeout": 20,
            "transaction_mode": "IMMEDIATE",
            "init_command": "PRAGMA journal_mode=WAL",
        },
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"aio_async": {"handlers": ["console"], "level": "INFO"}},
}

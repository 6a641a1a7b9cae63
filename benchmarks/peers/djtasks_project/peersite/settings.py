"""Minimal Django settings for the django-tasks-db peer benchmark (DSN from env BENCH_PG_DSN)."""

from __future__ import annotations

import os
from urllib.parse import unquote, urlparse

_dsn = urlparse(os.environ["BENCH_PG_DSN"])

SECRET_KEY = "peer-benchmark-not-secret"  # noqa: S105 - throwaway project, never served
DEBUG = False
USE_TZ = True
ALLOWED_HOSTS: list[str] = []
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

INSTALLED_APPS = ["django.contrib.contenttypes", "django_tasks_db", "peertasks"]

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": _dsn.path.lstrip("/"),
        "USER": unquote(_dsn.username or ""),
        "PASSWORD": unquote(_dsn.password or ""),
        "HOST": _dsn.hostname or "",
        "PORT": str(_dsn.port or ""),
        # Django's default is 0 (a new connection per worker loop iteration); 600 is the fast, honest setting.
        "CONN_MAX_AGE": int(os.environ.get("DJ_CONN_MAX_AGE", "600")),
        # The same prepared statements aio_async's benchmark uses (they need server-side
        # binding: Django's default client-side cursor never prepares). DJ_PREPARE=off: without.
        "OPTIONS": (
            {}
            if os.environ.get("DJ_PREPARE") == "off"
            else {"server_side_binding": True, "prepare_threshold": 5}
        ),
    }
}

#: This configuration's settings, for the results: persistent connections, and prepared
#: statements (which need server-side binding), as set above.
BENCH_SETTINGS = (
    "DATABASES['default']: ENGINE='django.db.backends.postgresql', NAME, HOST, PORT, USER, PASSWORD, "
    f"CONN_MAX_AGE={DATABASES['default']['CONN_MAX_AGE']!r}, OPTIONS={DATABASES['default']['OPTIONS']!r}"
)

TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend", "QUEUES": ["default"]}}

LOGGING = {"version": 1, "disable_existing_loggers": False}

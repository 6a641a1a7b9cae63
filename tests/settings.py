"""Settings for aio_async's own tests.

``AIO_ASYNC_TEST_DB`` picks the database: ``postgresql`` (the default; a server on
127.0.0.1:5432, user postgres, or ``PGHOST``/``PGPORT``/``PGUSER``/``PGPASSWORD``) or
``sqlite``. ``AIO_ASYNC_TEST_DB_NAME`` points a subprocess at the test run's database.
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any

VENDOR = os.environ.get("AIO_ASYNC_TEST_DB", "postgresql")
DB_NAME = os.environ.get("AIO_ASYNC_TEST_DB_NAME")

SECRET_KEY = "tests-only"
DEBUG = False
USE_TZ = True
TIME_ZONE = "Europe/Paris"
ROOT_URLCONF = "tests.urls"
INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "aio_async",
    "aio_async.demo",
    "tests.app",
]
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]

DATABASES: dict[str, dict[str, Any]]
if VENDOR == "sqlite":
    _path = os.path.join(tempfile.gettempdir(), "aio_async_tests.sqlite3")
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": DB_NAME or _path,
            "OPTIONS": {"timeout": 20, "transaction_mode": "IMMEDIATE"},
            # One test database per run, so that two runs on one machine never meet.
            "TEST": {"NAME": _path.replace(".sqlite3", f"_test_{os.getpid()}.sqlite3")},
        }
    }
elif VENDOR == "postgresql":
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": DB_NAME or "aio_async",
            "HOST": os.environ.get("PGHOST", "127.0.0.1"),
            "PORT": os.environ.get("PGPORT", "5432"),
            "USER": os.environ.get("PGUSER", "postgres"),
            "PASSWORD": os.environ.get("PGPASSWORD", ""),
            "CONN_MAX_AGE": 0,
            "TEST": {"NAME": f"test_aio_async_{os.getpid()}"},
        }
    }
else:
    raise RuntimeError(f"AIO_ASYNC_TEST_DB must be 'postgresql' or 'sqlite', not {VENDOR!r}")

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
# The admin tests create users: a fast hasher, not PBKDF2's deliberate slowness.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
AIO_ASYNC: dict[str, Any] = {
    "BACKOFF": {"BASE": 60, "EXPONENT": 1.6, "JITTER": 0.1},
    "POLL_INTERVAL": 0.05,
    "CONCURRENCY": 4,
    "LEASE_SECONDS": 30,
    # Claims past the frontier start when full claims have become slow, and a loaded test
    # machine makes any claim slow now and then: the tests that assert a strict claim order
    # must not depend on it. tests/integration/test_frontier.py sets "always".
    "CLAIM_FRONTIER": "never",
}
# Django's Tasks framework (Django 6, or the django-tasks backport on 5.2) on aio_async; any
# queue name (the tests use "other" too).
TASKS = {"default": {"BACKEND": "aio_async.backends.AioAsyncBackend", "QUEUES": []}}
# Fault tests run workers as subprocesses with other settings (a short lease, say).
AIO_ASYNC.update(json.loads(os.environ.get("AIO_ASYNC_TEST_SETTINGS", "{}")))
if "AIO_ASYNC_TEST_APPLICATION_NAME" in os.environ:  # to count a worker's connections
    DATABASES["default"].setdefault("OPTIONS", {})["application_name"] = os.environ[
        "AIO_ASYNC_TEST_APPLICATION_NAME"
    ]
if "AIO_ASYNC_TEST_CONN_MAX_AGE" in os.environ:
    DATABASES["default"]["CONN_MAX_AGE"] = int(os.environ["AIO_ASYNC_TEST_CONN_MAX_AGE"])

"""Collection rule of the integration tests: the django.tasks backend's tests need Django's
Tasks framework (Django 6, or the django-tasks backport on Django 5.2); without it they are
not collected at all (neither skipped nor erroring)."""

from __future__ import annotations

import importlib.util

TASKS_API = (
    importlib.util.find_spec("django.tasks") is not None
    or importlib.util.find_spec("django_tasks") is not None
)
collect_ignore = [] if TASKS_API else ["test_backend.py", "test_backend_conformance.py"]

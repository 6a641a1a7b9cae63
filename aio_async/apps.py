"""The Django app: wires up system checks and finds the project's task modules."""

from __future__ import annotations

from django.apps import AppConfig
from django.utils.module_loading import autodiscover_modules


class AioAsyncConfig(AppConfig):
    """aio_async's AppConfig; ``ready()`` only wires things."""

    name = "aio_async"
    verbose_name = "aio_async queue"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        """Register the system checks and import each installed app's ``tasks`` module."""
        from aio_async import checks  # noqa: F401 - registers the checks

        autodiscover_modules("tasks")

"""The demo app's configuration."""

from __future__ import annotations

from django.apps import AppConfig


class DemoConfig(AppConfig):
    """Holds the demo's Note model and tasks."""

    name = "aio_async.demo"
    label = "aio_async_demo"
    default_auto_field = "django.db.models.BigAutoField"

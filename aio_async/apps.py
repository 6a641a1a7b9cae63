"""The Django app: wires up system checks and finds the project's task modules."""

from __future__ import annotations

from django.apps import AppConfig, apps
from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import autodiscover_modules

#: What to do when Django runs without aio_async's app: said by the CLI and ``schedule()``.
NOT_INSTALLED = (
    'aio_async is not in INSTALLED_APPS: add "aio_async" to INSTALLED_APPS in your settings '
    "(its models, checks and task discovery need it)"
)


def require_installed() -> None:
    """Raise ImproperlyConfigured, naming the fix, when Django is set up without aio_async."""
    if apps.apps_ready and not apps.is_installed("aio_async"):
        raise ImproperlyConfigured(NOT_INSTALLED)


class AioAsyncConfig(AppConfig):
    """aio_async's AppConfig; ``ready()`` only wires things."""

    name = "aio_async"
    verbose_name = "aio_async queue"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        """Register the system checks and import each installed app's ``tasks`` module."""
        from aio_async import checks  # noqa: F401 - registers the checks

        _instrument()

        autodiscover_modules("tasks")


def _instrument() -> None:
    """Trace jobs with OpenTelemetry when ``AIO_ASYNC["OPENTELEMETRY"]`` says so."""
    from aio_async.conf import get_settings

    try:
        wanted = get_settings().opentelemetry
    except ImproperlyConfigured:
        return  # the system checks report invalid settings
    if not wanted:
        return
    try:
        from aio_async import otel
    except ImportError:
        raise ImproperlyConfigured(
            "AIO_ASYNC['OPENTELEMETRY'] needs OpenTelemetry: pip install 'aio_async[otel]'"
        ) from None
    otel.instrument()

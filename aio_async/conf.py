"""The ``AIO_ASYNC`` setting: one dict, upper-case keys, typed defaults.

Every key is documented in the README. An unknown key is a configuration error, so that a
typo such as ``CONCURENCY`` is caught at start-up instead of silently ignored.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping
from typing import Any

from django.conf import settings as django_settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.dispatch import receiver

__all__ = ["Backoff", "QueueSettings", "get_settings"]

BackoffPolicy = Callable[[int], float]


@dataclasses.dataclass(frozen=True)
class Backoff:
    """Retry delay ``BASE × attempt ** EXPONENT`` seconds, ± ``JITTER`` (a fraction), capped at ``MAX``."""

    base: float = 60.0
    exponent: float = 1.6
    jitter: float = 0.1
    max: float = 24 * 3600.0


@dataclasses.dataclass(frozen=True)
class QueueSettings:
    """The validated ``AIO_ASYNC`` setting."""

    allowed_modules: tuple[str, ...] | None = None
    max_attempts: int = 5
    backoff: Backoff | str | BackoffPolicy = Backoff()
    poll_interval: float = 1.0
    concurrency: int = 10
    database: str = "default"
    queues: tuple[str, ...] = ("default",)
    lease_seconds: float = 30.0
    heartbeat_interval: float | None = None
    rescue_interval: float | None = None
    shutdown_timeout: float = 30.0
    prepared: bool = True

    @property
    def heartbeat_every(self) -> float:
        """Seconds between lease renewals: a third of the lease unless set."""
        return self.heartbeat_interval or self.lease_seconds / 3

    @property
    def rescue_every(self) -> float:
        """Seconds between scans for expired leases: half the lease unless set."""
        return self.rescue_interval or self.lease_seconds / 2


_KEYS = {field.name.upper(): field for field in dataclasses.fields(QueueSettings)}
_BACKOFF_KEYS = {field.name.upper() for field in dataclasses.fields(Backoff)}


def _number(key: str, value: object, *, minimum: float, allow_none: bool = False) -> float | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value < minimum:
        raise ImproperlyConfigured(f"AIO_ASYNC[{key!r}] must be a number >= {minimum}, got {value!r}.")
    return float(value)


def _integer(key: str, value: object, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ImproperlyConfigured(f"AIO_ASYNC[{key!r}] must be an integer >= {minimum}, got {value!r}.")
    return value


def _names(key: str, value: object) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, list | tuple):
        raise ImproperlyConfigured(f"AIO_ASYNC[{key!r}] must be a list of strings, got {value!r}.")
    if not all(isinstance(item, str) and item for item in value):
        raise ImproperlyConfigured(f"AIO_ASYNC[{key!r}] must hold non-empty strings, got {value!r}.")
    return tuple(value)


def _backoff(value: object) -> Backoff | str | BackoffPolicy:
    if isinstance(value, Backoff | str) or callable(value):
        return value  # a dotted path or a callable(attempt) -> seconds
    if not isinstance(value, Mapping):
        raise ImproperlyConfigured(
            "AIO_ASYNC['BACKOFF'] must be a dict with keys BASE, EXPONENT, JITTER, MAX, "
            f"a callable(attempt) -> seconds, or its dotted path; got {value!r}."
        )
    unknown = set(value) - _BACKOFF_KEYS
    if unknown:
        raise ImproperlyConfigured(
            f"Unknown AIO_ASYNC['BACKOFF'] keys {sorted(unknown)}; known: {sorted(_BACKOFF_KEYS)}."
        )
    numbers = {str(k).lower(): _number(f"BACKOFF.{k}", v, minimum=0.0) for k, v in value.items()}
    if (numbers.get("jitter") or 0.0) > 1.0:
        raise ImproperlyConfigured("AIO_ASYNC['BACKOFF']['JITTER'] is a fraction between 0 and 1.")
    return Backoff(**numbers)  # type: ignore[arg-type]  # values checked above


def parse_settings(raw: object) -> QueueSettings:
    """Validate a raw ``AIO_ASYNC`` dict into a QueueSettings, or raise ImproperlyConfigured."""
    if raw is None:
        return QueueSettings()
    if not isinstance(raw, Mapping):
        raise ImproperlyConfigured(f"AIO_ASYNC must be a dict, got {type(raw).__name__}.")
    unknown = sorted(str(key) for key in raw if key not in _KEYS)
    if unknown:
        raise ImproperlyConfigured(f"Unknown AIO_ASYNC keys {unknown}; the known keys are {sorted(_KEYS)}.")
    values: dict[str, Any] = {}
    for key, value in raw.items():
        name = _KEYS[key].name
        if key == "ALLOWED_MODULES":
            values[name] = None if value is None else _names(key, value)
        elif key == "QUEUES":
            values[name] = _names(key, value)
        elif key in ("MAX_ATTEMPTS", "CONCURRENCY"):
            values[name] = _integer(key, value, minimum=1)
        elif key == "PREPARED":
            if not isinstance(value, bool):
                raise ImproperlyConfigured(f"AIO_ASYNC['PREPARED'] must be True or False, got {value!r}.")
            values[name] = value
        elif key == "BACKOFF":
            values[name] = _backoff(value)
        elif key == "DATABASE":
            if not isinstance(value, str) or value not in django_settings.DATABASES:
                raise ImproperlyConfigured(
                    f"AIO_ASYNC['DATABASE'] must name an alias of DATABASES, got {value!r}."
                )
            values[name] = value
        elif key in ("HEARTBEAT_INTERVAL", "RESCUE_INTERVAL"):
            values[name] = _number(key, value, minimum=0.01, allow_none=True)
        else:
            values[name] = _number(key, value, minimum=0.01 if key != "SHUTDOWN_TIMEOUT" else 0.0)
    return QueueSettings(**values)


@functools.cache
def get_settings() -> QueueSettings:
    """The project's validated ``AIO_ASYNC`` settings (cached until the setting changes)."""
    return parse_settings(getattr(django_settings, "AIO_ASYNC", None))


@receiver(setting_changed)
def _reset(*, setting: str, **_: object) -> None:
    if setting in ("AIO_ASYNC", "INSTALLED_APPS", "DATABASES"):
        get_settings.cache_clear()

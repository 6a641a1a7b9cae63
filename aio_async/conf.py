"""The ``AIO_ASYNC`` setting: one dict, upper-case keys, typed defaults.

Every key is documented in the README. An unknown key is a configuration error, so that a
typo such as ``CONCURENCY`` is caught at start-up instead of silently ignored.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import inspect
import math
from collections.abc import Callable, Mapping
from typing import Any

from django.conf import settings as django_settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.dispatch import receiver
from django.utils.module_loading import import_string

from aio_async.errors import InvalidOption
from aio_async.payload import Limits, check_concurrency_limit, check_max_attempts, check_queue, check_rate
from aio_async.retention import Retention
from aio_async.schedules import Schedule
from aio_async.schedules import parse_setting as parse_periodic

__all__ = [
    "EVERY_QUEUE",
    "Backoff",
    "HealthSettings",
    "QueueSettings",
    "get_settings",
    "parse_settings",
    "with_overrides",
]

BackoffPolicy = Callable[[int], float]


@dataclasses.dataclass(frozen=True)
class Backoff:
    """Retry delay ``BASE × attempt ** EXPONENT`` seconds, ± ``JITTER`` (a fraction), capped at ``MAX``."""

    base: float = 60.0
    exponent: float = 1.6
    jitter: float = 0.1
    max: float = 24 * 3600.0


@dataclasses.dataclass(frozen=True)
class HealthSettings:
    """When the health endpoint answers 503, and who may ask it (``AIO_ASYNC["HEALTH"]``)."""

    #: A bearer token that opens the endpoint to a probe; None: staff users only.
    token: str | None = None
    #: Unhealthy when the oldest due job has waited longer than this (seconds).
    max_due_age: float | None = 300.0
    #: Unhealthy when more attempts than this failed within ``failure_window``; None: never.
    max_failures: int | None = None
    failure_window: float = 300.0
    #: Unhealthy when no worker was heard of within this (seconds); None: three lease renewals.
    max_heartbeat_age: float | None = None


_HEALTH_KEYS = {field.name.upper(): field.name for field in dataclasses.fields(HealthSettings)}


@dataclasses.dataclass(frozen=True)
class QueueSettings:
    """The validated ``AIO_ASYNC`` setting."""

    allowed_modules: tuple[str, ...] | None = None
    max_attempts: int = 5
    backoff: Backoff | str | BackoffPolicy = Backoff()
    poll_interval: float = 1.0
    concurrency: int = 10
    database: str = "default"
    #: The queues a worker serves; ``"*"`` among them serves every queue.
    queues: tuple[str, ...] = ("default",)
    lease_seconds: float = 30.0
    heartbeat_interval: float | None = None
    rescue_interval: float | None = None
    shutdown_timeout: float = 30.0
    prepared: bool = True
    #: How long finished jobs are kept; None: for good (nothing is pruned unless asked).
    retention: Retention | None = None
    #: Schedules of tasks from other packages (``@periodic`` declares the project's own).
    periodic: tuple[Schedule, ...] = ()
    #: Limits of whole queues, by queue name: for jobs that have no limits of their own.
    queue_limits: Mapping[str, Limits] = dataclasses.field(default_factory=dict)
    #: The health endpoint's thresholds and token.
    health: HealthSettings = HealthSettings()
    #: Wake-ups by LISTEN/NOTIFY (PostgreSQL): True on the queue's database, the alias of a
    #: direct connection to it (when the queue's goes through a pooler in transaction mode),
    #: or False: poll only.
    listen: bool | str = True
    #: A worker serves its Prometheus metrics on this port (``--processes N``: this port and the
    #: next N - 1); None: it does not. Needs ``aio_async[prometheus]``.
    metrics_port: int | None = None
    #: Trace jobs with OpenTelemetry in every process (``aio_async[otel]``).
    opentelemetry: bool = False
    #: Claims past the frontier (``store.frontier``): "auto" (when full claims have become
    #: slow), "always" or "never".
    claim_frontier: str = "auto"
    #: A worker logs a summary of its jobs at INFO this often (seconds); 0: never.
    log_summary_interval: float = 60.0

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

#: The values of ``CLAIM_FRONTIER``.
CLAIM_FRONTIER = ("auto", "always", "never")

#: In ``QUEUES`` (or ``--queue``), every queue.
EVERY_QUEUE = "*"


def _number(label: str, value: object, *, minimum: float, allow_none: bool = False) -> float | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value) or value < minimum:
        raise ImproperlyConfigured(f"{label} must be a number >= {minimum}, got {value!r}.")
    return float(value)


def _integer(label: str, value: object, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ImproperlyConfigured(f"{label} must be an integer >= {minimum}, got {value!r}.")
    return value


def _names(label: str, value: object) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, list | tuple):
        raise ImproperlyConfigured(f"{label} must be a list of strings, got {value!r}.")
    if not all(isinstance(item, str) and item for item in value):
        raise ImproperlyConfigured(f"{label} must hold non-empty strings, got {value!r}.")
    return tuple(value)


def _backoff_policy(label: str, value: object) -> BackoffPolicy:
    """A callable(attempt) -> seconds, imported now when ``value`` is its dotted path.

    Checked when the settings are read, not at the first retry: a typo must stop a worker
    before it claims anything, not while it records a job's failure.
    """
    policy = value
    if isinstance(value, str):
        try:
            policy = import_string(value)
        except ImportError as exc:
            raise ImproperlyConfigured(
                f"{label} = {value!r} cannot be imported ({exc}): name a function that takes the "
                "attempt number and returns the seconds to wait, such as 'myproject.retry.backoff'."
            ) from None
    if not callable(policy):
        raise ImproperlyConfigured(
            f"{label} = {value!r} is a {type(policy).__name__}, not a function: it must take the "
            "attempt number (an int) and return the seconds to wait."
        )
    try:
        signature = inspect.signature(policy)
    except (TypeError, ValueError):
        return policy  # a builtin without a signature: it will tell at the first retry
    try:
        signature.bind(1)
    except TypeError:
        raise ImproperlyConfigured(
            f"{label} = {value!r} cannot be called with one argument, the attempt number (an int): "
            f"its signature is {signature}."
        ) from None
    return policy


def _backoff(label: str, value: object) -> Backoff | str | BackoffPolicy:
    if isinstance(value, Backoff):
        return value
    if isinstance(value, str) or callable(value):
        return _backoff_policy(label, value)
    if not isinstance(value, Mapping):
        raise ImproperlyConfigured(
            f"{label} must be a dict with keys BASE, EXPONENT, JITTER, MAX, "
            f"a callable(attempt) -> seconds, or its dotted path; got {value!r}."
        )
    unknown = set(value) - _BACKOFF_KEYS
    if unknown:
        raise ImproperlyConfigured(f"Unknown {label} keys {sorted(unknown)}; known: {sorted(_BACKOFF_KEYS)}.")
    numbers = {str(k).lower(): _number(f"{label}[{k!r}]", v, minimum=0.0) for k, v in value.items()}
    if (numbers.get("jitter") or 0.0) > 1.0:
        raise ImproperlyConfigured(f"{label}['JITTER'] is a fraction between 0 and 1.")
    return Backoff(**numbers)  # type: ignore[arg-type]  # values checked above


def _queue_limits(label: str, value: object) -> dict[str, Limits]:
    """``{"mail": {"CONCURRENCY": 2, "RATE": "5/s"}}``: each queue's limits, checked."""
    if not isinstance(value, Mapping):
        raise ImproperlyConfigured(
            f"{label} must be a dict of queue names to {{'CONCURRENCY': n, 'RATE': '5/s'}}, "
            f"got {value!r:.80}."
        )
    limits = {}
    for queue, given in value.items():
        where = f"{label}[{queue!r}]"
        if not isinstance(given, Mapping) or not given or set(given) - {"CONCURRENCY", "RATE"}:
            raise ImproperlyConfigured(
                f"{where} must be a dict with CONCURRENCY, RATE or both, got {given!r:.80}."
            )
        try:
            limits[check_queue(queue)] = Limits(
                key=f"queue:{queue}",
                concurrency=None
                if given.get("CONCURRENCY") is None
                else check_concurrency_limit(given["CONCURRENCY"], f"{where}['CONCURRENCY']"),
                rate=None if given.get("RATE") is None else check_rate(given["RATE"], f"{where}['RATE']"),
            )
        except InvalidOption as exc:
            raise ImproperlyConfigured(f"{where}: {exc}") from None
    return limits


def _health(label: str, value: object) -> HealthSettings:
    """``{"TOKEN": ..., "MAX_DUE_AGE": 300, ...}``, checked."""
    if not isinstance(value, Mapping):
        raise ImproperlyConfigured(
            f"{label} must be a dict with keys {sorted(_HEALTH_KEYS)}, got {value!r:.80}."
        )
    unknown = sorted(str(key) for key in value if key not in _HEALTH_KEYS)
    if unknown:
        raise ImproperlyConfigured(
            f"Unknown {label} keys {unknown}; the known keys are {sorted(_HEALTH_KEYS)}."
        )
    checked: dict[str, Any] = {}
    for key, given in value.items():
        where = f"{label}[{key!r}]"
        if key == "TOKEN":
            if given is not None and (not isinstance(given, str) or len(given) < 16):
                raise ImproperlyConfigured(f"{where} must be a string of at least 16 characters, or None.")
            checked["token"] = given
        elif key == "MAX_FAILURES":
            checked["max_failures"] = None if given is None else _integer(where, given, minimum=0)
        elif key == "FAILURE_WINDOW":
            checked["failure_window"] = _number(where, given, minimum=1.0)
        else:
            checked[_HEALTH_KEYS[key]] = _number(where, given, minimum=0.01, allow_none=True)
    return HealthSettings(**checked)


def _value(key: str, value: object, label: str) -> Any:
    """The checked value of one key, or ImproperlyConfigured naming it as ``label``."""
    if key == "ALLOWED_MODULES":
        return None if value is None else _names(label, value)
    if key == "QUEUES":
        names = _names(label, value)
        try:
            return tuple(name if name == EVERY_QUEUE else check_queue(name) for name in names)
        except InvalidOption as exc:
            raise ImproperlyConfigured(f"{label}: {exc}.") from None
    if key == "MAX_ATTEMPTS":
        try:  # the bound schedule() applies: a default it would refuse fails every call
            return check_max_attempts(value)
        except InvalidOption as exc:
            raise ImproperlyConfigured(f"{label}: {exc}.") from None
    if key == "CONCURRENCY":
        return _integer(label, value, minimum=1)
    if key == "PREPARED":
        if not isinstance(value, bool):
            raise ImproperlyConfigured(f"{label} must be True or False, got {value!r}.")
        return value
    if key == "BACKOFF":
        return _backoff(label, value)
    if key == "RETENTION":
        return None if value is None else Retention.parse(value, label)
    if key == "METRICS_PORT":
        if value is None:
            return None
        port = _integer(label, value, minimum=1)
        if port > 65535:
            raise ImproperlyConfigured(f"{label} must be a TCP port from 1 to 65535, got {value!r}.")
        return port
    if key == "OPENTELEMETRY":
        if not isinstance(value, bool):
            raise ImproperlyConfigured(f"{label} must be True or False, got {value!r}.")
        return value
    if key == "LISTEN":
        if isinstance(value, bool) or (isinstance(value, str) and value in django_settings.DATABASES):
            return value
        raise ImproperlyConfigured(
            f"{label} must be True, False (poll only) or the alias of a direct connection in DATABASES, "
            f"got {value!r:.80}."
        )
    if key == "CLAIM_FRONTIER":
        if value not in CLAIM_FRONTIER:
            raise ImproperlyConfigured(
                f"{label} must be one of {', '.join(map(repr, CLAIM_FRONTIER))}, got {value!r:.80}."
            )
        return value
    if key == "HEALTH":
        return _health(label, value)
    if key == "PERIODIC":
        return parse_periodic(value)
    if key == "QUEUE_LIMITS":
        return _queue_limits(label, value)
    if key == "DATABASE":
        if not isinstance(value, str) or value not in django_settings.DATABASES:
            raise ImproperlyConfigured(f"{label} must name an alias of DATABASES, got {value!r}.")
        return value
    if key == "LOG_SUMMARY_INTERVAL":
        if isinstance(value, int | float) and not isinstance(value, bool) and value == 0:
            return 0.0
        try:
            return _number(label, value, minimum=0.01)
        except ImproperlyConfigured:
            raise ImproperlyConfigured(
                f"{label} must be a number of seconds >= 0.01, or 0 for no summary, got {value!r}."
            ) from None
    if key in ("HEARTBEAT_INTERVAL", "RESCUE_INTERVAL"):
        return _number(label, value, minimum=0.01, allow_none=True)
    return _number(label, value, minimum=0.01 if key != "SHUTDOWN_TIMEOUT" else 0.0)


def _values(raw: Mapping[Any, object], labels: Mapping[str, str]) -> dict[str, Any]:
    unknown = sorted(str(key) for key in raw if key not in _KEYS)
    if unknown:
        guesses = {key: difflib.get_close_matches(key.upper(), _KEYS, n=1) for key in unknown}
        meant = "".join(f" Did you mean {guess[0]!r} for {key!r}?" for key, guess in guesses.items() if guess)
        raise ImproperlyConfigured(
            f"Unknown AIO_ASYNC keys {unknown}; the known keys are {sorted(_KEYS)}.{meant}"
        )
    return {
        _KEYS[key].name: _value(key, value, labels.get(key, f"AIO_ASYNC[{key!r}]"))
        for key, value in raw.items()
    }


def _consistent(settings: QueueSettings, labels: Mapping[str, str]) -> QueueSettings:
    """``settings``, once the keys that depend on each other agree; else ImproperlyConfigured."""
    if settings.heartbeat_every >= settings.lease_seconds:
        heartbeat = labels.get("HEARTBEAT_INTERVAL", "AIO_ASYNC['HEARTBEAT_INTERVAL']")
        lease = labels.get("LEASE_SECONDS", "AIO_ASYNC['LEASE_SECONDS']")
        raise ImproperlyConfigured(
            f"{heartbeat} ({settings.heartbeat_every:g} s) must be shorter than {lease} "
            f"({settings.lease_seconds:g} s): a lease would expire between two renewals, and "
            "another worker would take over jobs that are still running. Lower it, or leave it "
            "unset (a third of the lease)."
        )
    return settings


def parse_settings(raw: object) -> QueueSettings:
    """Validate a raw ``AIO_ASYNC`` dict into a QueueSettings, or raise ImproperlyConfigured."""
    if raw is None:
        return QueueSettings()
    if not isinstance(raw, Mapping):
        raise ImproperlyConfigured(f"AIO_ASYNC must be a dict, got {type(raw).__name__}.")
    return _consistent(QueueSettings(**_values(raw, {})), {})


def with_overrides(
    base: QueueSettings, overrides: Mapping[str, object], labels: Mapping[str, str] | None = None
) -> QueueSettings:
    """``base`` with some ``AIO_ASYNC`` keys replaced, each checked as the setting is.

    ``labels`` names a key in error messages (a command-line option, say); by default
    ``AIO_ASYNC['KEY']``.
    """
    labels = labels or {}
    return _consistent(dataclasses.replace(base, **_values(overrides, labels)), labels)


@functools.cache
def get_settings() -> QueueSettings:
    """The project's validated ``AIO_ASYNC`` settings (cached until the setting changes)."""
    return parse_settings(getattr(django_settings, "AIO_ASYNC", None))


@receiver(setting_changed)
def _reset(*, setting: str, **_: object) -> None:
    if setting in ("AIO_ASYNC", "INSTALLED_APPS", "DATABASES"):
        get_settings.cache_clear()

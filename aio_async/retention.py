"""Retention: how old a finished job may grow in each state before it is pruned (pure).

``AIO_ASYNC["RETENTION"]`` and ``python -m aio_async prune``'s options are read here;
``store.maintenance.prune()`` deletes, in batches.
"""

from __future__ import annotations

import dataclasses
import datetime
import re
from collections.abc import Mapping

from django.core.exceptions import ImproperlyConfigured

__all__ = ["BATCH", "PRUNED_STATES", "Retention", "parse_age"]

#: The states a job can be pruned in, as ``Retention`` fields and ``--STATE`` options.
PRUNED_STATES = ("succeeded", "failed", "cancelled")
BATCH = 1000
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_AGE = re.compile(r"(\d+(?:\.\d+)?)([smhdw]?)")


def parse_age(value: object, label: str) -> float | None:
    """Seconds from ``"7d"``, ``"12h"``, ``"30m"``, ``"45s"``, ``"2w"``, a number, a timedelta or None."""
    if value is None:
        return None
    if isinstance(value, datetime.timedelta):
        value = value.total_seconds()
    if isinstance(value, str):
        found = _AGE.fullmatch(value.strip())
        if found is None:
            raise ImproperlyConfigured(
                f"{label} must be an age such as '7d', '12h', '30m', '45s' or '2w', got {value!r}."
            )
        value = float(found.group(1)) * _UNITS[found.group(2) or "s"]
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < float("inf"):
        raise ImproperlyConfigured(
            f"{label} must be an age (a number of seconds >= 0, or '7d'), got {value!r}."
        )
    return float(value)


@dataclasses.dataclass(frozen=True)
class Retention:
    """How long finished jobs are kept, per state, in seconds (None: for good)."""

    succeeded: float | None = None
    failed: float | None = None
    cancelled: float | None = None
    #: How often a worker prunes, when the setting is on.
    every: float = 3600.0

    @classmethod
    def parse(cls, raw: object, label: str = "AIO_ASYNC['RETENTION']") -> Retention:
        """The ``RETENTION`` setting: a dict of ``SUCCEEDED``, ``FAILED``, ``CANCELLED``, ``EVERY``."""
        if not isinstance(raw, Mapping):
            raise ImproperlyConfigured(
                f"{label} must be a dict such as {{'SUCCEEDED': '7d', 'FAILED': '30d'}}, got {raw!r}."
            )
        known = {state.upper() for state in PRUNED_STATES} | {"EVERY"}
        unknown = sorted(str(key) for key in raw if key not in known)
        if unknown:
            raise ImproperlyConfigured(f"Unknown {label} keys {unknown}; known: {sorted(known)}.")
        ages = {str(key).lower(): parse_age(value, f"{label}[{key!r}]") for key, value in raw.items()}
        every = ages.pop("every", None)
        if every is not None and every < 1:
            raise ImproperlyConfigured(f"{label}['EVERY'] must be at least 1 second, got {every!r}.")
        return cls(**ages, every=every if every is not None else cls.every)

    @property
    def ages(self) -> dict[str, float]:
        """The states that are pruned, with their ages."""
        return {state: age for state in PRUNED_STATES if (age := getattr(self, state)) is not None}

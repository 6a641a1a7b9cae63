"""How long a failed job waits before its next attempt."""

from __future__ import annotations

import math
import random
from collections.abc import Callable

from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

from aio_async.conf import Backoff, QueueSettings

__all__ = ["retry_delay"]


def _policy(settings: QueueSettings) -> Callable[[int], float]:
    backoff = settings.backoff
    if isinstance(backoff, Backoff):
        return lambda attempt: exponential(attempt, backoff)
    if isinstance(backoff, str):
        try:
            policy = import_string(backoff)
        except ImportError as exc:
            raise ImproperlyConfigured(f"AIO_ASYNC['BACKOFF'] = {backoff!r}: {exc}") from exc
        if not callable(policy):
            raise ImproperlyConfigured(f"AIO_ASYNC['BACKOFF'] = {backoff!r} is not callable")
        return policy  # type: ignore[no-any-return]
    return backoff


def exponential(attempt: int, backoff: Backoff) -> float:
    """``base × attempt ** exponent`` seconds with ± jitter, capped (django-async's 60 s × n^1.6)."""
    delay: float = backoff.base * math.pow(attempt, backoff.exponent)
    if backoff.jitter:
        delay *= 1 + random.uniform(-backoff.jitter, backoff.jitter)  # noqa: S311 - not crypto
    return max(0.0, min(delay, backoff.max))


def retry_delay(attempt: int, settings: QueueSettings) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (1 for the first failure)."""
    return max(0.0, float(_policy(settings)(attempt)))

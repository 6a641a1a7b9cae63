"""The ``prune`` verb (and ``manage.py prune_queue``): delete finished jobs past their state's age."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

__all__ = ["prune_jobs"]


def prune_jobs(options: Mapping[str, Any]) -> dict[str, dict[str, int]]:
    """Run ``prune`` with the command line's ages over the setting's; ImproperlyConfigured if none."""
    from django.core.exceptions import ImproperlyConfigured

    from aio_async.conf import get_settings
    from aio_async.retention import PRUNED_STATES, Retention, parse_age
    from aio_async.store.maintenance import prune

    settings = get_settings()
    configured = settings.retention or Retention()
    given = {state: options.get(state) for state in PRUNED_STATES}
    ages: dict[str, Any] = {
        state: parse_age(age, f"--{state}") for state, age in given.items() if age is not None
    }
    retention = dataclasses.replace(configured, **ages)
    if not retention.ages:
        raise ImproperlyConfigured(
            "nothing to prune: give an age, such as --succeeded 7d --failed 30d, or set "
            "AIO_ASYNC['RETENTION'] = {'SUCCEEDED': '7d', 'FAILED': '30d'}"
        )
    counted = prune(retention, using=settings.database, dry_run=options.get("dry_run", False))
    return {"would_delete" if options.get("dry_run") else "deleted": counted}

"""Pausing and resuming queues, and the workers that serve them.

A paused queue keeps its jobs queued: every worker stops claiming from it within one poll
interval (at once on PostgreSQL, where the change is sent as a NOTIFY on commit), and starts
again when it is resumed. Jobs already running finish.
"""

from __future__ import annotations

import datetime
import os
import socket
from typing import Any

from asgiref.sync import sync_to_async
from django.db import transaction
from django.utils import timezone

from aio_async.conf import get_settings
from aio_async.models import Job, Queue, Worker
from aio_async.payload import check_queue
from aio_async.readmodel import queue_states
from aio_async.store.maintenance import notify_queue

__all__ = ["apause", "aresume", "known", "overview", "pause", "paused", "resume", "workers"]


def _set(queue: str, paused: bool, by: str | None, using: str | None) -> bool:
    """Pause or resume ``queue``; True if that changed it."""
    name = check_queue(queue)
    alias = using or get_settings().database
    if by is None:
        by = f"process {os.getpid()} on {socket.gethostname()}"
    with transaction.atomic(using=alias):
        queues = Queue.objects.using(alias)
        row, created = queues.select_for_update().get_or_create(
            name=name, defaults={"paused": paused, "changed_by": by[:255]}
        )
        if created:
            changed = paused  # a queue without a row was running
        elif row.paused == paused:
            return False
        else:
            queues.filter(name=name).update(paused=paused, changed=timezone.now(), changed_by=by[:255])
            changed = True
        if changed:
            notify_queue(name, alias)
    return changed


def pause(queue: str, *, by: str | None = None, using: str | None = None) -> bool:
    """Pause ``queue``: its jobs stay queued until it is resumed; True if it was running.

    Runs in the caller's transaction. ``by`` says who paused it (a person, a process).
    """
    return _set(queue, True, by, using)


def resume(queue: str, *, by: str | None = None, using: str | None = None) -> bool:
    """Resume ``queue``: workers claim its jobs again; True if it was paused."""
    name = check_queue(queue)
    alias = using or get_settings().database
    if not Queue.objects.using(alias).filter(name=name, paused=True).exists():
        return False
    return _set(name, False, by, using)


def known(queue: str, *, using: str | None = None) -> bool:
    """True when a setting, a registered task, a job or a pause on record names ``queue``.

    ``queues pause`` refuses other names (unless forced): a typo would otherwise be paused
    for good, and every worker would log it, while the queue meant runs on.
    """
    from django.conf import settings as django_settings

    from aio_async.allow import registered
    from aio_async.startup import DEFAULT_QUEUE

    settings = get_settings()
    named = {DEFAULT_QUEUE, *settings.queues, *settings.queue_limits}
    named.update(target.options.queue or DEFAULT_QUEUE for target in registered().values())
    for backend in (getattr(django_settings, "TASKS", None) or {}).values():
        if isinstance(backend, dict) and isinstance(backend.get("QUEUES"), list | tuple):
            named.update(name for name in backend["QUEUES"] if isinstance(name, str))
    if queue in named:
        return True
    alias = using or settings.database
    return (
        Queue.objects.using(alias).filter(name=queue).exists()
        or Job.objects.using(alias).filter(queue=queue).exists()
    )


def paused(*, using: str | None = None) -> set[str]:
    """The names of the paused queues."""
    alias = using or get_settings().database
    return set(Queue.objects.using(alias).filter(paused=True).values_list("name", flat=True))


def workers(*, within: float | None = None, using: str | None = None) -> list[dict[str, Any]]:
    """The workers alive: those heard of within ``within`` seconds (default: three lease renewals)."""
    settings = get_settings()
    alias = using or settings.database
    seconds = within if within is not None else 3 * settings.heartbeat_every
    since = timezone.now() - datetime.timedelta(seconds=seconds)
    return [
        {
            "id": worker.id,
            "host": worker.host,
            "pid": worker.pid,
            "queues": worker.queues.split(","),
            "concurrency": worker.concurrency,
            "started": worker.started.isoformat(),
            "heartbeat": worker.heartbeat.isoformat(),
        }
        for worker in Worker.objects.using(alias).filter(heartbeat__gte=since).order_by("started", "id")
    ]


def overview(*, using: str | None = None) -> list[dict[str, Any]]:
    """Every queue with jobs or a pause on record: jobs by status, due now, oldest due, paused."""
    now = timezone.now()
    return [
        {
            "queue": name,
            "paused": state.paused,
            "jobs": state.counts,
            "due": state.due,
            "oldest_due_age_seconds": None if (age := state.oldest_due_age(now)) is None else round(age, 3),
        }
        for name, state in queue_states(using=using, now=now).items()
    ]


apause = sync_to_async(pause, thread_sensitive=True)
apause.__doc__ = "Pause a queue, from async code."
aresume = sync_to_async(resume, thread_sensitive=True)
aresume.__doc__ = "Resume a queue, from async code."

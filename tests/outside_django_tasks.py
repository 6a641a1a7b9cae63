"""A task of Django's Tasks framework outside any installed app (see ``outside_tasks``)."""

from __future__ import annotations

from tests.app.django_tasks import task
from tests.app.models import Record


@task()
def outside_task(key: str) -> int:
    """Write a Record (were it ever run)."""
    return Record.objects.create(key=key).pk

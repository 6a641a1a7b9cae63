"""Tasks outside any installed app, as in a project package that startproject does not list in
INSTALLED_APPS: this process registers them when it imports this module, a worker never does.
"""

from __future__ import annotations

from aio_async import task
from tests.app.models import Record


@task
def outside(key: str) -> int:
    """Write a Record (were it ever run)."""
    return Record.objects.create(key=key).pk

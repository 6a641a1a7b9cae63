"""``manage.py queue_health``: print the queue's health as JSON."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand

from aio_async.health import health


class Command(BaseCommand):
    """Print ``aio_async.health()`` as JSON."""

    help = "Print the queue's health as JSON."

    def handle(self, *args: Any, **options: Any) -> None:
        """Print the health report."""
        self.stdout.write(json.dumps(health(), indent=2))

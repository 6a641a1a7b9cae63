"""``manage.py flush_queue``: run due jobs until none is left, then exit."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from aio_async.cli import add_flush_arguments, flush, worker_overrides


class Command(BaseCommand):
    """Run due jobs until the queue is empty (like ``python -m aio_async flush``)."""

    help = "Run due jobs until none is left, then exit."

    def add_arguments(self, parser: CommandParser) -> None:
        """--jobs, --filter, --exclude, --queue, --concurrency."""
        add_flush_arguments(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        """Flush the queue and print the outcomes as JSON."""
        outcomes = flush(
            worker_overrides(options),
            max_jobs=options["jobs"],
            include=options["filter"],
            exclude=options["exclude"],
        )
        self.stdout.write(json.dumps({"outcomes": outcomes}))

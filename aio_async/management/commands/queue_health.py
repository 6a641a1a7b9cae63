"""``manage.py queue_health``: print the queue's health as JSON."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from aio_async.cli import command_logging
from aio_async.health_report import health


class Command(BaseCommand):
    """Print ``aio_async.health()`` as JSON."""

    help = "Print the queue's health as JSON."

    def create_parser(self, prog_name: str, subcommand: str, **kwargs: Any) -> CommandParser:
        """Django's parser, without abbreviated options."""
        return super().create_parser(prog_name, subcommand, allow_abbrev=False, **kwargs)

    def handle(self, *args: Any, **options: Any) -> None:
        """Print the health report."""
        with command_logging(self.stderr, options["verbosity"]):
            report = health()
        self.stdout.write(json.dumps(report, indent=2))

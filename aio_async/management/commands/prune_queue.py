"""``manage.py prune_queue``: delete finished jobs older than their state's age."""

from __future__ import annotations

import json
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError, CommandParser

from aio_async.cli import CONFIGURATION_ERROR, add_prune_arguments, prune_jobs


class Command(BaseCommand):
    """Delete finished jobs past their state's age, with their errors (like ``python -m aio_async prune``)."""

    help = (
        "Delete finished jobs older than their state's age (--succeeded 7d --failed 30d), with their errors."
    )

    def create_parser(self, prog_name: str, subcommand: str, **kwargs: Any) -> CommandParser:
        """Django's parser, without abbreviated options."""
        return super().create_parser(prog_name, subcommand, allow_abbrev=False, **kwargs)

    def add_arguments(self, parser: CommandParser) -> None:
        """--succeeded, --failed, --cancelled (ages), --dry-run."""
        add_prune_arguments(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        """Prune, and print what was (or would be) deleted as JSON."""
        try:
            counted = prune_jobs(options)
        except ImproperlyConfigured as exc:
            raise CommandError(str(exc), returncode=CONFIGURATION_ERROR) from exc
        self.stdout.write(json.dumps(counted))

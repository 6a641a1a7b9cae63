"""``manage.py flush_queue``: run due jobs until none is left, then exit."""

from __future__ import annotations

import json
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError, CommandParser

from aio_async.cli import (
    CONFIGURATION_ERROR,
    OptionError,
    add_flush_arguments,
    check_options,
    command_logging,
    flush,
)


class Command(BaseCommand):
    """Run due jobs until the queue is empty (like ``python -m aio_async flush``)."""

    help = (
        "Run due jobs until none is left, then exit; what happened on stderr, and with --outcomes-json "
        "the outcomes counted as JSON on stdout."
    )

    def create_parser(self, prog_name: str, subcommand: str, **kwargs: Any) -> CommandParser:
        """Django's parser, without abbreviated options."""
        return super().create_parser(prog_name, subcommand, allow_abbrev=False, **kwargs)

    def add_arguments(self, parser: CommandParser) -> None:
        """--jobs, --filter, --exclude, --queue, --concurrency, --outcomes-json."""
        add_flush_arguments(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        """Flush the queue, logging on stderr; print the outcomes as JSON when asked."""
        try:
            overrides = check_options(options)
        except OptionError as exc:
            raise CommandError(str(exc), returncode=CONFIGURATION_ERROR) from exc
        with command_logging(self.stderr, options["verbosity"]):
            try:
                outcomes = flush(
                    overrides,
                    max_jobs=options["jobs"],
                    include=options["filter"],
                    exclude=options["exclude"],
                )
            except ImproperlyConfigured as exc:
                raise CommandError(str(exc), returncode=CONFIGURATION_ERROR) from exc
        if options["outcomes_json"]:
            self.stdout.write(json.dumps({"outcomes": outcomes}))

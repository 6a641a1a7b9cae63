"""``python -m aio_async``: run, flush, health, periodic, queues, workers, prune and demo.

Without ``DJANGO_SETTINGS_MODULE`` or ``--settings`` it uses ``aio_async.embedded``: a
SQLite file in the current folder, migrated on first use; where a ``manage.py`` is, it
refuses (exit 2) unless ``--embedded`` asks for that. ``demo`` always uses it.

One module a concern: ``options`` (parsing, and checking options as their settings are),
``logs`` (what is shown, how loudly), ``run`` (the verbs ``run`` and ``flush``), ``prune``,
``queues``; here, Django's set-up and the dispatch to the verb.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import signal
import sys
from collections.abc import Sequence
from typing import Any

from aio_async.cli.logs import command_logging, job_logging
from aio_async.cli.options import (
    EMBEDDED_SETTINGS,
    OPTION_LABELS,
    OptionError,
    add_flush_arguments,
    add_prune_arguments,
    add_worker_arguments,
    check_options,
    child_arguments,
    cli_level,
    exit_with_parent,
    parser,
    settings_with,
    worker_overrides,
)
from aio_async.cli.prune import prune_jobs
from aio_async.cli.queues import queues_verb
from aio_async.cli.run import STOP_REQUESTED, announce, flush, request_stop, run_worker, tune_sqlite
from aio_async.supervisor import CONFIGURATION_ERROR, EXIT_WITH_PARENT_VARIABLE, follow_parent, supervise

__all__ = [
    "CONFIGURATION_ERROR",
    "EMBEDDED_SETTINGS",
    "OPTION_LABELS",
    "OptionError",
    "SettingsError",
    "add_flush_arguments",
    "add_prune_arguments",
    "add_worker_arguments",
    "check_options",
    "child_arguments",
    "command_logging",
    "flush",
    "job_logging",
    "main",
    "prune_jobs",
    "run_worker",
    "setup_django",
    "worker_overrides",
]

logger = logging.getLogger("aio_async.cli")


class SettingsError(Exception):
    """The Django settings module cannot be imported."""


def setup_django(settings_module: str | None) -> bool:
    """Configure Django; return True when the embedded settings are in use (then migrate).

    Raises SettingsError when the settings module cannot be imported.
    """
    import django

    if settings_module:
        os.environ["DJANGO_SETTINGS_MODULE"] = settings_module
    module = os.environ.get("DJANGO_SETTINGS_MODULE") or EMBEDDED_SETTINGS
    os.environ["DJANGO_SETTINGS_MODULE"] = module
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        importlib.import_module(module)
    except (ImportError, SyntaxError) as exc:
        raise SettingsError(f"cannot import settings module {module!r}: {exc}") from exc
    django.setup()
    from django.apps import apps

    from aio_async.apps import NOT_INSTALLED

    if not apps.is_installed("aio_async"):
        raise SettingsError(f"settings module {module!r}: {NOT_INSTALLED}")
    embedded = module == EMBEDDED_SETTINGS
    if embedded:
        from django.core.management import call_command

        call_command("migrate", interactive=False, verbosity=0)
    return embedded


def _demo_settings(options: argparse.Namespace) -> None:
    """Point Django at the embedded settings, saying on stderr which settings it ignores."""
    from aio_async import embedded

    ignored = []
    if options.settings:
        ignored.append(f"--settings {options.settings}")
    environment = os.environ.get("DJANGO_SETTINGS_MODULE")
    if environment and environment != EMBEDDED_SETTINGS:
        ignored.append(f"DJANGO_SETTINGS_MODULE={environment}")
    if ignored:
        print(
            f"aio_async demo: ignoring {' and '.join(ignored)}: the demo runs on its own SQLite file "
            f"{embedded.DATABASES['default']['NAME']} ({EMBEDDED_SETTINGS}), never on another database",
            file=sys.stderr,
        )
    options.settings = None
    os.environ["DJANGO_SETTINGS_MODULE"] = EMBEDDED_SETTINGS


def _settings_problem(options: argparse.Namespace) -> str | None:
    """Why the settings asked for are refused; with ``--embedded``, point at the embedded ones."""
    if options.embedded:
        if options.settings and options.settings != EMBEDDED_SETTINGS:
            return "give --settings or --embedded, not both"
        options.settings = EMBEDDED_SETTINGS
        return None
    if options.settings or os.environ.get("DJANGO_SETTINGS_MODULE"):
        return None
    if os.path.exists("manage.py"):
        return (
            "no settings given in a folder with a manage.py: pass --settings yourproject.settings "
            "or set DJANGO_SETTINGS_MODULE (--embedded runs on aio_async's own SQLite file instead)"
        )
    return None


def _command(options: argparse.Namespace, overrides: dict[str, Any], parent: int | None = None) -> int:
    """Run the verb, Django set up; return the exit code. ``run`` stops once ``parent`` (a pid) is gone."""
    if options.command == "run" and STOP_REQUESTED:
        return 0  # stopped while it started: nothing was claimed
    if options.command in ("run", "flush") and not (options.command == "run" and options.processes > 1):
        settings = settings_with(overrides)
        announce(settings)
        tune_sqlite(settings)
    if options.command == "run" and options.processes > 1:
        settings_with(overrides)  # the project's settings and the options together, before any child
        settings_module = os.environ["DJANGO_SETTINGS_MODULE"]
        return supervise(options.processes, child_arguments(options, settings_module), parent=parent)
    if options.command in ("run", "flush"):
        if options.command == "run":
            outcomes = run_worker(overrides, parent=parent)
        else:
            outcomes = flush(
                overrides, max_jobs=options.jobs, include=options.filter, exclude=options.exclude
            )
        if options.outcomes_json:  # stdout may be someone's data: written to only when asked
            print(json.dumps({"outcomes": outcomes}))
    elif options.command == "periodic":
        from aio_async.cron import describe, schedules

        print(json.dumps(describe(schedules(), using=settings_with(overrides).database), indent=2))
    elif options.command == "prune":
        print(json.dumps(prune_jobs(vars(options))))
    elif options.command == "queues":
        return queues_verb(options, settings_with(overrides).database)
    elif options.command == "workers":
        from aio_async.queues import workers

        print(json.dumps(workers(using=settings_with(overrides).database), indent=2))
    elif options.command == "stats":
        from aio_async.readmodel import stats

        print(json.dumps(stats(options.window, using=settings_with(overrides).database), indent=2))
    elif options.command == "health":
        from aio_async.health_report import health

        print(json.dumps(health(), indent=2))
    else:
        from aio_async.demo.run import demo

        return demo()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m aio_async``; returns the exit code."""
    from django.core.exceptions import ImproperlyConfigured
    from django.db import DatabaseError

    options = parser().parse_args(argv)
    if options.command == "run":
        # Until the worker's own handlers are installed nothing has been claimed, so a stop
        # request (a supervisor's SIGTERM during start-up) is simply a clean exit.
        signal.signal(signal.SIGTERM, request_stop)
    parent = None
    try:
        overrides = check_options(vars(options))
        if options.command == "run" and exit_with_parent(vars(options), os.environ):
            # As early as can be. Read once: a process this one's jobs start is not asked to.
            os.environ.pop(EXIT_WITH_PARENT_VARIABLE, None)
            parent = follow_parent()
    except OptionError as exc:
        print(f"python -m aio_async {options.command}: error: {exc}", file=sys.stderr)
        return CONFIGURATION_ERROR
    if options.command == "demo":
        _demo_settings(options)
    elif (problem := _settings_problem(options)) is not None:
        print(f"python -m aio_async {options.command}: error: {problem}", file=sys.stderr)
        return CONFIGURATION_ERROR
    try:
        setup_django(options.settings)
        with job_logging(cli_level(options)):
            return _command(options, overrides, parent)
    except SettingsError as exc:
        print(f"aio_async: {exc}", file=sys.stderr)
        return CONFIGURATION_ERROR
    except ImproperlyConfigured as exc:
        print(f"aio_async: configuration error: {exc}", file=sys.stderr)
        return CONFIGURATION_ERROR
    except DatabaseError as exc:
        detail = " ".join(str(exc).split())  # one line, whatever the driver's message spans
        print(f"aio_async: database error: {type(exc).__name__}: {detail}", file=sys.stderr)
        return 1

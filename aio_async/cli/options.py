"""The command line's options: parsing them, and checking them as their ``AIO_ASYNC`` keys are."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, NoReturn

from aio_async.supervisor import CONFIGURATION_ERROR, EXIT_WITH_PARENT_VARIABLE

if TYPE_CHECKING:
    from aio_async.conf import QueueSettings

__all__ = [
    "EMBEDDED_SETTINGS",
    "OPTION_LABELS",
    "VERBOSITY_LEVELS",
    "OptionError",
    "add_flush_arguments",
    "add_prune_arguments",
    "add_worker_arguments",
    "check_options",
    "child_arguments",
    "cli_level",
    "exit_with_parent",
    "parser",
    "settings_with",
    "worker_overrides",
]

#: The settings module used without --settings or DJANGO_SETTINGS_MODULE (a SQLite file here).
EMBEDDED_SETTINGS = "aio_async.embedded"
#: The command-line option that sets each ``AIO_ASYNC`` key, to name it in errors.
OPTION_LABELS = {
    "QUEUES": "--queue",
    "CONCURRENCY": "--concurrency",
    "POLL_INTERVAL": "--poll-interval",
    "SHUTDOWN_TIMEOUT": "--shutdown-timeout",
}
#: manage.py's verbosity as a level of the ``aio_async`` logger.
VERBOSITY_LEVELS = {0: logging.WARNING, 1: logging.INFO, 2: logging.DEBUG, 3: logging.DEBUG}


class OptionError(Exception):
    """A command-line option fails the check its ``AIO_ASYNC`` key would."""


def worker_overrides(options: Mapping[str, Any]) -> dict[str, Any]:
    """The ``AIO_ASYNC`` keys that command-line options replace, with the options' values."""
    overrides: dict[str, Any] = {}
    if options.get("queue"):
        overrides["QUEUES"] = list(options["queue"])
    for field in ("concurrency", "poll_interval", "shutdown_timeout"):
        if options.get(field) is not None:
            overrides[field.upper()] = options[field]
    return overrides


def check_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """The worker overrides, checked as ``AIO_ASYNC`` is; OptionError names the bad option."""
    from django.core.exceptions import ImproperlyConfigured

    from aio_async.conf import QueueSettings, with_overrides

    overrides = worker_overrides(options)
    try:
        with_overrides(QueueSettings(), overrides, OPTION_LABELS)
    except ImproperlyConfigured as exc:
        raise OptionError(str(exc)) from exc
    return overrides


def exit_with_parent(options: Mapping[str, Any], environ: Mapping[str, str]) -> bool:
    """Whether ``run`` stops with its parent: ``--exit-with-parent``, or ``AIO_ASYNC_EXIT_WITH_PARENT=1``."""
    value = environ.get(EXIT_WITH_PARENT_VARIABLE, "")
    if value not in ("", "0", "1"):
        raise OptionError(
            f"{EXIT_WITH_PARENT_VARIABLE} must be 1 (stop once the parent process is gone) or 0, "
            f"got {value!r}"
        )
    return bool(options.get("exit_with_parent")) or value == "1"


def settings_with(overrides: Mapping[str, Any] | None) -> QueueSettings:
    """The settings with the command line's overrides, checked as ``AIO_ASYNC`` is."""
    from aio_async.conf import get_settings, with_overrides

    return with_overrides(get_settings(), overrides or {}, OPTION_LABELS)


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line, and which takes no abbreviated option."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["allow_abbrev"] = False
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        """Print ``prog: error: message`` on one line and exit 2."""
        self.exit(CONFIGURATION_ERROR, f"{self.prog}: error: {message} (see --help)\n")


def _add_global_options(parser: argparse.ArgumentParser, *, after_verb: bool) -> None:
    """--settings and the verbosity options, accepted before the verb and after it.

    After the verb their defaults are suppressed, so that they do not undo the same option
    given before it.
    """
    default: dict[str, Any] = {"default": argparse.SUPPRESS} if after_verb else {}
    parser.add_argument(
        "--settings",
        help="Django settings module (default: $DJANGO_SETTINGS_MODULE; without either, the "
        "embedded SQLite settings, refused where a manage.py is unless --embedded is given)",
        **default,
    )
    parser.add_argument(
        "--embedded",
        action="store_true",
        help="use aio_async's embedded SQLite settings (a file in the current folder), "
        "even where a manage.py is",
        **({"default": argparse.SUPPRESS} if after_verb else {"default": False}),
    )
    parser.add_argument(
        "--log-level",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="level of the aio_async logger (overrides -v and -q)",
        **default,
    )
    parser.add_argument(
        "-v",
        "--verbosity",
        type=int,
        choices=[0, 1, 2, 3],
        help="0: warnings and errors only; 1 (default): also the worker's start, stop and a summary of "
        "its jobs every AIO_ASYNC['LOG_SUMMARY_INTERVAL'] seconds; 2 and 3: debug, with a line per job",
        **default,
    )
    parser.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="warnings and errors only (as --verbosity 0)",
        **({"default": argparse.SUPPRESS} if after_verb else {"default": False}),
    )


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _window(text: str) -> float:
    """``stats --window``: seconds, above 0 and at most a week."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number of seconds, got {text!r}") from None
    if not 0 < value <= 7 * 86400:
        raise argparse.ArgumentTypeError(f"must be above 0 and at most a week (604800 s), got {text}")
    return value


def add_worker_arguments(parser: argparse.ArgumentParser) -> None:
    """The options ``run`` and ``flush`` share."""
    parser.add_argument(
        "--queue",
        action="append",
        help="queue to serve (repeatable); '*' serves every queue (default: AIO_ASYNC['QUEUES'])",
    )
    parser.add_argument("--concurrency", type=int, help="jobs at once (default: AIO_ASYNC['CONCURRENCY'])")
    parser.add_argument(
        "--outcomes-json",
        action="store_true",
        help='at exit, print the outcomes counted as one line of JSON on stdout, {"outcomes": {...}} '
        "(without it stdout stays empty; the same counts are logged on stderr)",
    )


def add_flush_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``flush`` and ``manage.py flush_queue``."""
    add_worker_arguments(parser)
    parser.add_argument("--jobs", type=_positive_int, help="run at most this many jobs")
    parser.add_argument(
        "--filter", action="append", default=[], help="only jobs whose name contains this (repeatable)"
    )
    parser.add_argument(
        "--exclude", action="append", default=[], help="skip jobs whose name contains this (repeatable)"
    )


def add_prune_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``prune`` and ``manage.py prune_queue``."""
    from aio_async.retention import PRUNED_STATES  # imports no settings

    for state in PRUNED_STATES:
        parser.add_argument(
            f"--{state}",
            metavar="AGE",
            help=f"delete {state} jobs finished longer ago than AGE: 7d, 12h, 30m, 45s, 2w "
            f"(default: AIO_ASYNC['RETENTION']['{state.upper()}'], else keep them)",
        )
    parser.add_argument("--dry-run", action="store_true", help="count what would be deleted; delete nothing")


def parser() -> argparse.ArgumentParser:
    """The parser of ``python -m aio_async``: the global options, then one verb and its options."""
    found = _Parser(
        prog="python -m aio_async",
        description="aio_async's worker and its tools; give --help after a verb for its options.",
    )
    _add_global_options(found, after_verb=False)
    commands = found.add_subparsers(dest="command", required=True)

    def verb(name: str, help_text: str) -> argparse.ArgumentParser:
        sub: argparse.ArgumentParser = commands.add_parser(name, help=help_text, description=help_text)
        _add_global_options(sub, after_verb=True)
        return sub

    run = verb("run", "run the worker until SIGINT/SIGTERM")
    add_worker_arguments(run)
    run.add_argument(
        "--poll-interval", type=float, help="seconds between polls (default: AIO_ASYNC['POLL_INTERVAL'])"
    )
    run.add_argument(
        "--shutdown-timeout",
        type=float,
        help="seconds to let running jobs finish on stop (default: AIO_ASYNC['SHUTDOWN_TIMEOUT'])",
    )
    run.add_argument(
        "--processes", type=_positive_int, default=1, help="worker processes, supervised (default 1)"
    )
    run.add_argument(
        "--exit-with-parent",
        action="store_true",
        help="stop, as on SIGTERM, once the process that started this one is gone "
        f"(or set {EXIT_WITH_PARENT_VARIABLE}=1)",
    )
    add_flush_arguments(verb("flush", "run due jobs until none is left, then exit"))
    verb("health", "print the queue's health as JSON")
    stats = verb(
        "stats",
        "print per queue the jobs due, scheduled and running, and the throughput and pick-up "
        "latency of the last --window seconds, as JSON (reads no finished history)",
    )
    stats.add_argument(
        "--window", type=_window, default=60.0, help="seconds of recent history to measure (default 60)"
    )
    verb("periodic", "list the periodic schedules with their next tick, as JSON")
    queues = verb("queues", "list the queues (jobs by status, paused or not) as JSON, or pause or resume one")
    queues.add_argument("action", nargs="?", choices=("list", "pause", "resume"), default="list")
    queues.add_argument("name", nargs="?", help="the queue to pause or resume")
    queues.add_argument("--by", help="who pauses or resumes it, for the record (default: this process)")
    queues.add_argument(
        "--force",
        action="store_true",
        help="pause a queue that no setting, task, job or earlier pause names (refused otherwise: a typo?)",
    )
    verb("workers", "list the workers alive (heard of within three lease renewals) as JSON")
    add_prune_arguments(verb("prune", "delete finished jobs older than their state's age, with their errors"))
    verb(
        "demo",
        "schedule a few jobs on the embedded SQLite database and run them "
        "(ignores --settings and DJANGO_SETTINGS_MODULE)",
    )
    return found


def child_arguments(options: argparse.Namespace, settings_module: str) -> list[str]:
    """The arguments of one worker under ``run --processes N``: the parsed options but --processes."""
    arguments = [f"--settings={settings_module}"]
    if options.embedded:
        arguments.append("--embedded")
    if options.log_level:
        arguments.append(f"--log-level={options.log_level}")
    if options.verbosity is not None:
        arguments.append(f"--verbosity={options.verbosity}")
    if options.quiet:
        arguments.append("--quiet")
    arguments.append("run")
    arguments.extend(f"--queue={queue}" for queue in options.queue or ())
    if options.outcomes_json:
        arguments.append("--outcomes-json")  # one line from each worker process
    for option, value in (
        ("--concurrency", options.concurrency),
        ("--poll-interval", options.poll_interval),
        ("--shutdown-timeout", options.shutdown_timeout),
    ):
        if value is not None:
            arguments.append(f"{option}={value!r}")
    return arguments


def cli_level(options: argparse.Namespace) -> int | None:
    """The ``aio_async`` logger's level the options ask for (None: the project's, or INFO)."""
    if options.log_level:
        return int(getattr(logging, options.log_level))
    if options.quiet:
        return logging.WARNING
    if options.verbosity is not None:
        return VERBOSITY_LEVELS[options.verbosity]
    return None

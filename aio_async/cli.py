"""``python -m aio_async``: run, flush, health, periodic, queues, workers, prune and demo.

Without ``DJANGO_SETTINGS_MODULE`` or ``--settings`` it uses ``aio_async.embedded``: a
SQLite file in the current folder, migrated on first use; where a ``manage.py`` is, it
refuses (exit 2) unless ``--embedded`` asks for that. ``demo`` always uses it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import importlib
import json
import logging
import os
import signal
import sys
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NoReturn

from aio_async.supervisor import CONFIGURATION_ERROR, SLOT_VARIABLE, SUPERVISOR_VARIABLE, supervise

if TYPE_CHECKING:
    from _typeshed import SupportsWrite
    from django.core.management.base import OutputWrapper

    from aio_async.conf import QueueSettings
    from aio_async.executor import Executor

__all__ = [
    "CONFIGURATION_ERROR",
    "EMBEDDED_SETTINGS",
    "OPTION_LABELS",
    "SettingsError",
    "child_arguments",
    "command_logging",
    "flush",
    "job_logging",
    "main",
    "run_worker",
    "setup_django",
    "worker_overrides",
]

logger = logging.getLogger("aio_async.cli")

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
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class SettingsError(Exception):
    """The Django settings module cannot be imported."""


class OptionError(Exception):
    """A command-line option fails the check its ``AIO_ASYNC`` key would."""


# Options and settings -------------------------------------------------------------------


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


def _settings(overrides: Mapping[str, Any] | None) -> QueueSettings:
    from aio_async.conf import get_settings, with_overrides

    return with_overrides(get_settings(), overrides or {}, OPTION_LABELS)


# Running ---------------------------------------------------------------------------------


@contextlib.contextmanager
def _signals(loop: asyncio.AbstractEventLoop, stop: Executor) -> Iterator[None]:
    """First SIGINT/SIGTERM stops the worker gently; a second SIGINT exits at once."""
    received: list[int] = []

    def handle(signum: int) -> None:
        received.append(signum)
        if len(received) > 1 and signum == signal.SIGINT:
            logger.warning("Second interrupt: exiting now", extra={"action": "forced_exit"})
            os._exit(130)
        logger.info("Received %s", signal.Signals(signum).name, extra={"action": "signal_received"})
        stop.stop()

    installed = []
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signum, handle, signum)
            installed.append(signum)
    try:
        yield
    finally:
        for signum in installed:
            loop.remove_signal_handler(signum)


def _executor(overrides: Mapping[str, Any] | None, **options: Any) -> Executor:
    from aio_async.executor import Executor

    return Executor(settings=_settings(overrides), **options)


def _outcomes(counted: Mapping[Any, int]) -> dict[str, int]:
    return {outcome.value: count for outcome, count in counted.items()}


def run_worker(overrides: Mapping[str, Any] | None = None, *, handle_signals: bool = True) -> dict[str, int]:
    """Run the long-lived worker until SIGINT/SIGTERM; return the outcomes counted.

    ``overrides`` replaces ``AIO_ASYNC`` keys (``{"QUEUES": ["mail"]}``), checked as the setting is.
    """

    executor = _executor(overrides)
    _serve_metrics(executor.settings)
    # Read once and forgotten: a process this worker's jobs start is not the supervisor's.
    supervisor = os.environ.pop(SUPERVISOR_VARIABLE, None)

    async def main() -> dict[str, int]:
        loop = asyncio.get_running_loop()
        watch = asyncio.create_task(_watch_supervisor(executor, int(supervisor))) if supervisor else None
        try:
            with _signals(loop, executor) if handle_signals else contextlib.nullcontext():
                return _outcomes(await executor.run())
        finally:
            if watch is not None:
                watch.cancel()

    return asyncio.run(main())


async def _watch_supervisor(executor: Executor, pid: int) -> None:
    """Stop the worker, gently, once its supervisor is gone (killed with SIGKILL, say)."""
    while os.getppid() == pid:  # noqa: ASYNC110 - no event tells a process its parent died
        await asyncio.sleep(1.0)
    logger.warning(
        "The supervisor (pid %s) is gone; stopping this worker",
        pid,
        extra={"action": "supervisor_gone", "pid": pid},
    )
    executor.stop()


def _serve_metrics(settings: QueueSettings) -> None:
    """Serve this worker's Prometheus metrics when ``METRICS_PORT`` says so (its slot's port)."""
    if settings.metrics_port is None:
        return
    from django.core.exceptions import ImproperlyConfigured

    try:
        from aio_async.metrics import serve
    except ImportError:
        raise ImproperlyConfigured(
            "AIO_ASYNC['METRICS_PORT'] needs prometheus_client: pip install 'aio_async[prometheus]'"
        ) from None

    port = settings.metrics_port + int(os.environ.get(SLOT_VARIABLE, "0"))
    try:
        serve(port)
    except OSError as exc:
        raise ImproperlyConfigured(f"cannot serve metrics on port {port}: {exc}") from None
    logger.info("Serving metrics on port %s", port, extra={"action": "metrics_served", "port": port})


def flush(
    overrides: Mapping[str, Any] | None = None,
    *,
    max_jobs: int | None = None,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
) -> dict[str, int]:
    """Run due jobs until none is left (or ``max_jobs`` have run); return the outcomes counted."""
    executor = _executor(overrides, include=tuple(include), exclude=tuple(exclude), max_jobs=max_jobs)

    async def main() -> dict[str, int]:
        with _signals(asyncio.get_running_loop(), executor):
            return _outcomes(await executor.run(until_empty=True))

    return asyncio.run(main())


# Logging ---------------------------------------------------------------------------------


def _project_handles_logs() -> bool:
    """True when the logging configuration gives aio_async's records a handler already."""
    if logging.getLogger("aio_async").hasHandlers():  # its own, or an ancestor's: the root's
        return True
    return any(
        isinstance(known, logging.Logger) and known.handlers
        for name, known in logging.Logger.manager.loggerDict.items()
        if name.startswith("aio_async.")
    )


@contextlib.contextmanager
def job_logging(level: int | None = None, stream: SupportsWrite[str] | None = None) -> Iterator[None]:
    """Show aio_async's records (one line per finished job at INFO) while the block runs.

    They go through the project's logging when it gives ``aio_async`` or the root logger a
    handler; otherwise through a plain handler on ``stream`` (stderr). ``level`` is the
    ``aio_async`` logger's level; None keeps the project's, or INFO when it set none.
    """
    package = logging.getLogger("aio_async")
    previous = package.level
    if level is not None or previous == logging.NOTSET:
        package.setLevel(logging.INFO if level is None else level)
    handler: logging.Handler | None = None
    if not _project_handles_logs():
        handler = logging.StreamHandler[Any](sys.stderr if stream is None else stream)
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        package.addHandler(handler)
    try:
        yield
    finally:
        if handler is not None:
            package.removeHandler(handler)
        package.setLevel(previous)


class _Plain:
    """A management command's stderr, written without the colour Django gives errors."""

    def __init__(self, wrapper: OutputWrapper) -> None:
        self.wrapper = wrapper

    def write(self, text: str) -> int:
        """Write ``text`` as it is."""
        self.wrapper.write(text, style_func=lambda same: same, ending="")
        return len(text)

    def flush(self) -> None:
        """Flush the wrapped stream."""
        self.wrapper.flush()


def command_logging(stderr: OutputWrapper, verbosity: int) -> contextlib.AbstractContextManager[None]:
    """job_logging() for a management command: its ``--verbosity``, its stderr."""
    level = None if verbosity == 1 else VERBOSITY_LEVELS.get(verbosity, logging.DEBUG)
    return job_logging(level, _Plain(stderr))


def _cli_level(options: argparse.Namespace) -> int | None:
    if options.log_level:
        return int(getattr(logging, options.log_level))
    if options.quiet:
        return logging.WARNING
    if options.verbosity is not None:
        return VERBOSITY_LEVELS[options.verbosity]
    return None


# Parsing ---------------------------------------------------------------------------------


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
        help="0: warnings and errors only, 1: one line per finished job (default), 2 and 3: debug",
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


def add_worker_arguments(parser: argparse.ArgumentParser) -> None:
    """The options ``run`` and ``flush`` share."""
    parser.add_argument(
        "--queue",
        action="append",
        help="queue to serve (repeatable); '*' serves every queue (default: AIO_ASYNC['QUEUES'])",
    )
    parser.add_argument("--concurrency", type=int, help="jobs at once (default: AIO_ASYNC['CONCURRENCY'])")


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


def prune_jobs(options: Mapping[str, Any]) -> dict[str, dict[str, int]]:
    """Run ``prune`` with the command line's ages over the setting's; ImproperlyConfigured if none."""
    from django.core.exceptions import ImproperlyConfigured

    from aio_async.conf import get_settings
    from aio_async.retention import PRUNED_STATES, Retention, parse_age
    from aio_async.store.maintenance import prune

    settings = get_settings()
    configured = settings.retention or Retention()
    given = {state: options.get(state) for state in PRUNED_STATES}
    ages: dict[str, Any] = {
        state: parse_age(age, f"--{state}") for state, age in given.items() if age is not None
    }
    retention = dataclasses.replace(configured, **ages)
    if not retention.ages:
        raise ImproperlyConfigured(
            "nothing to prune: give an age, such as --succeeded 7d --failed 30d, or set "
            "AIO_ASYNC['RETENTION'] = {'SUCCEEDED': '7d', 'FAILED': '30d'}"
        )
    counted = prune(retention, using=settings.database, dry_run=options.get("dry_run", False))
    return {"would_delete" if options.get("dry_run") else "deleted": counted}


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="python -m aio_async",
        description="aio_async's worker and its tools; give --help after a verb for its options.",
    )
    _add_global_options(parser, after_verb=False)
    commands = parser.add_subparsers(dest="command", required=True)

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
    add_flush_arguments(verb("flush", "run due jobs until none is left, then exit"))
    verb("health", "print the queue's health as JSON")
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
    return parser


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
    for option, value in (
        ("--concurrency", options.concurrency),
        ("--poll-interval", options.poll_interval),
        ("--shutdown-timeout", options.shutdown_timeout),
    ):
        if value is not None:
            arguments.append(f"{option}={value!r}")
    return arguments


# Django ----------------------------------------------------------------------------------


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


def _exit_before_start(signum: int, frame: object) -> None:
    raise SystemExit(0)


def _describe_database(alias: str) -> str:
    """``sqlite /path/db.sqlite3`` or ``postgresql mydb on db.example``: what a worker uses."""
    from django.db import connections

    connection = connections[alias]  # a wrapper: reading it does not connect
    described = f"{connection.vendor} {connection.settings_dict.get('NAME')}"
    host = connection.settings_dict.get("HOST")
    return f"{described} on {host}" if host else described


def _announce(settings: QueueSettings) -> None:
    """Say which settings module and which queue database this process works on."""
    module = os.environ.get("DJANGO_SETTINGS_MODULE", "")
    logger.info(
        "Using settings %s%s and the queue database %r (%s)",
        module,
        " (embedded: aio_async's own SQLite file)" if module == EMBEDDED_SETTINGS else "",
        settings.database,
        _describe_database(settings.database),
        extra={"action": "worker_settings", "settings": module, "database": settings.database},
    )


def _tune_sqlite(settings: QueueSettings) -> None:
    """Warn about a SQLite queue database as checks W002-W004 do; set what this process can.

    The worker is a process of its own: before its connections open it may take the write
    lock at BEGIN (transaction_mode IMMEDIATE) and wait for the lock (a busy timeout) when
    the settings leave them out. The web processes still need them in ``OPTIONS``.
    """
    from django.db import connections

    from aio_async.checks import sqlite_messages

    connection = connections[settings.database]
    if connection.vendor != "sqlite":
        return
    options = connection.settings_dict.setdefault("OPTIONS", {})
    for message in sqlite_messages(settings, options):
        logger.warning("%s (%s) %s", message.msg, message.id, message.hint, extra={"action": "worker_check"})
    chosen: dict[str, Any] = {}
    if options.get("transaction_mode") is None:
        chosen["transaction_mode"] = "IMMEDIATE"
    if "timeout" not in options:
        chosen["timeout"] = settings.heartbeat_every  # W003's least, within W004's bound
    if not chosen:
        return
    connection.close()  # none should be open yet; a new one reads the options
    options.update(chosen)
    logger.warning(
        "This worker sets %s on its own connections to %r; the other processes (the web "
        "server, manage.py) still use the settings' OPTIONS",
        " and ".join(f"{key} {value!r}" for key, value in chosen.items()),
        settings.database,
        extra={"action": "sqlite_options_set", "options": chosen},
    )


def _command(options: argparse.Namespace, overrides: dict[str, Any]) -> int:
    """Run the verb, Django set up; return the exit code."""
    if options.command in ("run", "flush") and not (options.command == "run" and options.processes > 1):
        settings = _settings(overrides)
        _announce(settings)
        _tune_sqlite(settings)
    if options.command == "run" and options.processes > 1:
        _settings(overrides)  # the project's settings and the options together, before any child
        settings_module = os.environ["DJANGO_SETTINGS_MODULE"]
        return supervise(options.processes, child_arguments(options, settings_module))
    if options.command == "run":
        print(json.dumps({"outcomes": run_worker(overrides)}))
    elif options.command == "flush":
        outcomes = flush(overrides, max_jobs=options.jobs, include=options.filter, exclude=options.exclude)
        print(json.dumps({"outcomes": outcomes}))
    elif options.command == "periodic":
        from aio_async.cron import describe, schedules

        print(json.dumps(describe(schedules(), using=_settings(overrides).database), indent=2))
    elif options.command == "prune":
        print(json.dumps(prune_jobs(vars(options))))
    elif options.command == "queues":
        return _queues(options, _settings(overrides).database)
    elif options.command == "workers":
        from aio_async.queues import workers

        print(json.dumps(workers(using=_settings(overrides).database), indent=2))
    elif options.command == "health":
        from aio_async.health_report import health

        print(json.dumps(health(), indent=2))
    else:
        from aio_async.demo.run import demo

        return demo()
    return 0


def _queues(options: argparse.Namespace, using: str) -> int:
    """``queues``: list them, or pause or resume one; return the exit code."""
    from aio_async import queues
    from aio_async.errors import InvalidOption
    from aio_async.payload import check_queue

    if options.action == "list":
        if options.name:
            print("python -m aio_async queues: error: give a name to pause or resume only", file=sys.stderr)
            return CONFIGURATION_ERROR
        print(json.dumps(queues.overview(using=using), indent=2))
        return 0
    if not options.name:
        print(f"python -m aio_async queues {options.action}: error: which queue?", file=sys.stderr)
        return CONFIGURATION_ERROR
    if options.action == "pause" and not options.force:
        try:
            unknown = not queues.known(check_queue(options.name), using=using)
        except InvalidOption as exc:
            print(f"python -m aio_async queues pause: error: {exc}", file=sys.stderr)
            return CONFIGURATION_ERROR
        if unknown:
            print(
                f"python -m aio_async queues pause: error: no setting, task, job or earlier pause "
                f"names queue {options.name!r} (a typo?); --force pauses it all the same",
                file=sys.stderr,
            )
            return CONFIGURATION_ERROR
    change = queues.pause if options.action == "pause" else queues.resume
    try:
        changed = change(options.name, by=options.by, using=using)
    except InvalidOption as exc:
        print(f"python -m aio_async queues {options.action}: error: {exc}", file=sys.stderr)
        return CONFIGURATION_ERROR
    state = "paused" if options.action == "pause" else "running"
    print(json.dumps({"queue": options.name, "state": state, "changed": changed}))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m aio_async``; returns the exit code."""
    from django.core.exceptions import ImproperlyConfigured
    from django.db import DatabaseError

    options = _parser().parse_args(argv)
    if options.command == "run":
        # Until the worker's own handlers are installed nothing has been claimed, so a stop
        # request (a supervisor's SIGTERM during start-up) is simply a clean exit.
        signal.signal(signal.SIGTERM, _exit_before_start)
    try:
        overrides = check_options(vars(options))
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
        with job_logging(_cli_level(options)):
            return _command(options, overrides)
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

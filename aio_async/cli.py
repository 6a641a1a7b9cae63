"""``python -m aio_async``: run, flush, health and demo.

Without ``DJANGO_SETTINGS_MODULE`` or ``--settings`` it uses ``aio_async.embedded``: a
SQLite file in the current folder, migrated on first use.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import signal
import sys
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from aio_async.executor import Executor

__all__ = ["flush", "main", "run_worker"]

logger = logging.getLogger("aio_async.cli")


def worker_overrides(options: Mapping[str, Any]) -> dict[str, Any]:
    """The QueueSettings fields that command-line options replace."""
    overrides: dict[str, Any] = {}
    if options.get("queue"):
        overrides["queues"] = tuple(options["queue"])
    for field in ("concurrency", "poll_interval", "shutdown_timeout"):
        if options.get(field) is not None:
            overrides[field] = options[field]
    return overrides


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
    from aio_async.conf import get_settings
    from aio_async.executor import Executor

    return Executor(settings=dataclasses.replace(get_settings(), **(overrides or {})), **options)


def _outcomes(counted: Mapping[Any, int]) -> dict[str, int]:
    return {outcome.value: count for outcome, count in counted.items()}


def run_worker(overrides: Mapping[str, Any] | None = None, *, handle_signals: bool = True) -> dict[str, int]:
    """Run the long-lived worker until SIGINT/SIGTERM; return the outcomes counted."""
    executor = _executor(overrides)

    async def main() -> dict[str, int]:
        loop = asyncio.get_running_loop()
        with _signals(loop, executor) if handle_signals else contextlib.nullcontext():
            return _outcomes(await executor.run())

    return asyncio.run(main())


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


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {value}")
    return value


def add_worker_arguments(parser: argparse.ArgumentParser) -> None:
    """The options ``run`` and ``flush`` share."""
    parser.add_argument(
        "--queue", action="append", help="queue to serve (repeatable; default: AIO_ASYNC['QUEUES'])"
    )
    parser.add_argument(
        "--concurrency", type=_positive_int, help="jobs at once (default: AIO_ASYNC['CONCURRENCY'])"
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


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m aio_async", description=__doc__.splitlines()[0] if __doc__ else None
    )
    parser.add_argument(
        "--settings", help="Django settings module (default: $DJANGO_SETTINGS_MODULE, else embedded SQLite)"
    )
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run the worker until SIGINT/SIGTERM")
    add_worker_arguments(run)
    run.add_argument("--poll-interval", type=_positive_float, help="seconds between polls")
    run.add_argument("--shutdown-timeout", type=float, help="seconds to let running jobs finish on stop")
    run.add_argument(
        "--processes", type=_positive_int, default=1, help="worker processes, supervised (default 1)"
    )
    flush_parser = commands.add_parser("flush", help="run due jobs until none is left, then exit")
    add_flush_arguments(flush_parser)
    commands.add_parser("health", help="print the queue's health as JSON")
    commands.add_parser("demo", help="schedule a few jobs on the embedded SQLite database and run them")
    return parser


def setup_django(settings_module: str | None) -> bool:
    """Configure Django; return True when the embedded settings are in use (then migrate)."""
    import django

    if settings_module:
        os.environ["DJANGO_SETTINGS_MODULE"] = settings_module
    embedded = not os.environ.get("DJANGO_SETTINGS_MODULE")
    if embedded:
        os.environ["DJANGO_SETTINGS_MODULE"] = "aio_async.embedded"
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    django.setup()
    if embedded:
        from django.core.management import call_command

        call_command("migrate", interactive=False, verbosity=0)
    return embedded


def _without_processes(argv: Sequence[str] | None) -> list[str]:
    arguments = list(sys.argv[1:] if argv is None else argv)
    for index, argument in enumerate(arguments):
        if argument == "--processes":
            return arguments[:index] + arguments[index + 2 :]
        if argument.startswith("--processes="):
            return arguments[:index] + arguments[index + 1 :]
    return arguments


def _exit_before_start(signum: int, frame: object) -> None:
    raise SystemExit(0)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m aio_async``; returns the exit code."""
    options = _parser().parse_args(argv)
    if options.command == "run":
        # Until the worker's own handlers are installed nothing has been claimed, so a stop
        # request (a supervisor's SIGTERM during start-up) is simply a clean exit.
        signal.signal(signal.SIGTERM, _exit_before_start)
    setup_django(options.settings)
    logging.getLogger("aio_async").setLevel(options.log_level)
    if not logging.getLogger().handlers and not logging.getLogger("aio_async").handlers:
        logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from django.core.exceptions import ImproperlyConfigured

    try:
        if options.command == "run" and options.processes > 1:
            from aio_async.supervisor import supervise

            return supervise(options.processes, _without_processes(argv))
        if options.command == "run":
            outcomes = run_worker(worker_overrides(vars(options)))
            print(json.dumps({"outcomes": outcomes}))
        elif options.command == "flush":
            outcomes = flush(
                worker_overrides(vars(options)),
                max_jobs=options.jobs,
                include=options.filter,
                exclude=options.exclude,
            )
            print(json.dumps({"outcomes": outcomes}))
        elif options.command == "health":
            from aio_async.health import health

            print(json.dumps(health(), indent=2))
        else:
            from aio_async.demo.run import demo

            return demo()
    except ImproperlyConfigured as exc:
        print(f"aio_async: configuration error: {exc}", file=sys.stderr)
        return 2
    return 0

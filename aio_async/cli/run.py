"""The verbs that run jobs: ``run`` (the long-lived worker) and ``flush`` (until none is due)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from aio_async.cli.options import EMBEDDED_SETTINGS, settings_with
from aio_async.supervisor import SLOT_VARIABLE, SUPERVISOR_VARIABLE

if TYPE_CHECKING:
    from aio_async.conf import QueueSettings
    from aio_async.executor import Executor

__all__ = ["STOP_REQUESTED", "announce", "flush", "request_stop", "run_worker", "tune_sqlite"]

logger = logging.getLogger("aio_async.cli")


#: SIGTERMs received before the worker's own handlers were installed (``request_stop``).
STOP_REQUESTED: list[int] = []


def request_stop(signum: int, frame: object) -> None:
    """A stop asked for while the worker starts (a supervisor's SIGTERM): it stops before claiming.

    Recorded, not raised: an exception raised wherever the start-up happens to be (inside
    Django's set-up, a thread pool's shutdown) could be swallowed there, or leave a thread
    the interpreter then waits for at exit.
    """
    STOP_REQUESTED.append(signum)


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

    return Executor(settings=settings_with(overrides), **options)


def _outcomes(counted: Mapping[Any, int]) -> dict[str, int]:
    return {outcome.value: count for outcome, count in counted.items()}


def run_worker(
    overrides: Mapping[str, Any] | None = None, *, handle_signals: bool = True, parent: int | None = None
) -> dict[str, int]:
    """Run the long-lived worker until SIGINT/SIGTERM; return the outcomes counted.

    ``overrides`` replaces ``AIO_ASYNC`` keys (``{"QUEUES": ["mail"]}``), checked as the setting is.
    With ``parent`` (a pid, see ``supervisor.follow_parent``), the worker also stops once its
    parent is no longer that process.
    """

    executor = _executor(overrides)
    _serve_metrics(executor.settings)
    # Read once and forgotten: a process this worker's jobs start is not the supervisor's.
    supervisor = os.environ.pop(SUPERVISOR_VARIABLE, None)

    async def main() -> dict[str, int]:
        loop = asyncio.get_running_loop()
        watches = []
        if supervisor:
            watches.append(asyncio.create_task(_watch_parent(executor, int(supervisor), supervisor=True)))
        if parent is not None:
            watches.append(asyncio.create_task(_watch_parent(executor, parent, supervisor=False)))
        try:
            with _signals(loop, executor) if handle_signals else contextlib.nullcontext():
                if STOP_REQUESTED:  # asked to stop while it started: it claims nothing
                    executor.stop()
                return _outcomes(await executor.run())
        finally:
            for watch in watches:
                watch.cancel()

    return asyncio.run(main())


async def _watch_parent(executor: Executor, pid: int, *, supervisor: bool) -> None:
    """Stop the worker, gently, once its parent (its supervisor, or whatever started it) is gone.

    A dead parent's children are handed to another process: ``os.getppid()`` changes.
    """
    while os.getppid() == pid:  # noqa: ASYNC110 - no event tells a process its parent died
        await asyncio.sleep(1.0)
    logger.warning(
        "The %s (pid %s) is gone; stopping this worker",
        "supervisor" if supervisor else "parent process",
        pid,
        extra={"action": "supervisor_gone" if supervisor else "parent_gone", "pid": pid},
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


def _describe_database(alias: str) -> str:
    """``sqlite /path/db.sqlite3`` or ``postgresql mydb on db.example``: what a worker uses."""
    from django.db import connections

    connection = connections[alias]  # a wrapper: reading it does not connect
    described = f"{connection.vendor} {connection.settings_dict.get('NAME')}"
    host = connection.settings_dict.get("HOST")
    return f"{described} on {host}" if host else described


def announce(settings: QueueSettings) -> None:
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


def tune_sqlite(settings: QueueSettings) -> None:
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

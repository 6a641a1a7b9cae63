"""``run --processes N``: start N worker processes, restart one that dies, forward signals.

Each child is ``python -m aio_async run`` with the supervisor's options (built from the
parsed options, without ``--processes``), in a session of its own so that a Ctrl-C in the
terminal reaches the children once, through the supervisor. A child that exits with 2 met a
configuration error (a bad setting, a database without migrations): restarting it would
not help, so the supervisor stops the others and exits 2 too. Several machines sharing one
PostgreSQL need nothing more than this same command on each.

``run --exit-with-parent`` (or ``AIO_ASYNC_EXIT_WITH_PARENT=1``) stops a worker, or a
supervisor and its workers, as SIGTERM does once the process that started it is gone:
``follow_parent`` asks Linux for a SIGTERM then, and the caller also watches its parent's pid.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from types import FrameType

__all__ = [
    "CONFIGURATION_ERROR",
    "EXIT_WITH_PARENT_VARIABLE",
    "SLOT_VARIABLE",
    "SUPERVISOR_VARIABLE",
    "follow_parent",
    "supervise",
]

#: Exit code of a configuration error: a bad option, setting or settings module, or a
#: database without aio_async's migrations. A supervisor does not restart such a worker.
CONFIGURATION_ERROR = 2

logger = logging.getLogger("aio_async.supervisor")

#: The environment variable that tells a supervised worker its slot: 0 to N - 1.
SLOT_VARIABLE = "AIO_ASYNC_WORKER_SLOT"
#: The supervisor's pid, for its workers: one whose parent is no longer that process stops.
SUPERVISOR_VARIABLE = "AIO_ASYNC_SUPERVISOR_PID"
#: ``1``: ``run`` stops as on SIGTERM once the process that started it is gone (``--exit-with-parent``).
EXIT_WITH_PARENT_VARIABLE = "AIO_ASYNC_EXIT_WITH_PARENT"
#: prctl(2)'s option that names the signal a process gets when its parent dies (Linux).
_PR_SET_PDEATHSIG = 1
#: A child that dies sooner than this after its start is restarted with growing delays.
STABLE_SECONDS = 5.0
MAX_RESTART_DELAY = 30.0


def follow_parent() -> int:
    """Ask for SIGTERM when this process's parent dies (Linux); return the parent's pid, to watch.

    The kernel's signal comes at once, but only on Linux, and not for a parent that died
    before this call: the caller also checks now and then that ``os.getppid()`` is still the
    pid returned (it changes when the parent dies, everywhere).
    """
    parent = os.getppid()
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            failed = libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0
        except (OSError, AttributeError):
            failed = True
        if failed:
            logger.debug(
                "prctl(PR_SET_PDEATHSIG) failed; watching the parent's pid only",
                extra={"action": "parent_death_signal_failed"},
            )
    return parent


class _Child:
    def __init__(self, slot: int, command: list[str]) -> None:
        self.slot = slot
        self.command = command
        self.failures = 0
        self.process = self._spawn()

    def _spawn(self) -> subprocess.Popen[bytes]:
        self.started = time.monotonic()
        # The slot tells the worker which of the N it is (its metrics port is METRICS_PORT + slot).
        env = {**os.environ, SLOT_VARIABLE: str(self.slot), SUPERVISOR_VARIABLE: str(os.getpid())}
        process = subprocess.Popen(self.command, start_new_session=True, env=env)  # noqa: S603 - our own command
        logger.info(
            "Worker process %s started (pid %s)",
            self.slot,
            process.pid,
            extra={"action": "worker_process_started", "pid": process.pid},
        )
        return process

    def restart_if_dead(self, now: float) -> None:
        code = self.process.poll()
        if code is None:
            return
        if now - self.started >= STABLE_SECONDS:
            self.failures = 0
        delay = min(MAX_RESTART_DELAY, 0.5 * 2**self.failures) if self.failures else 0.0
        if now - self.started < delay:
            return
        logger.warning(
            "Worker process %s (pid %s) exited with %s; restarting it",
            self.slot,
            self.process.pid,
            code,
            extra={"action": "worker_process_died", "pid": self.process.pid, "code": code},
        )
        self.failures += 1
        self.process = self._spawn()


def supervise(processes: int, worker_arguments: Sequence[str], *, parent: int | None = None) -> int:
    """Run ``processes`` workers until SIGTERM/SIGINT; return 0 when all stopped cleanly.

    With ``parent`` (a pid), also stop them as on SIGTERM once this process's parent is no
    longer that process.
    """
    command = [sys.executable, "-m", "aio_async", *worker_arguments]
    children = [_Child(slot, command) for slot in range(processes)]
    received: list[int] = []
    #: Set once the loop has stopped restarting children: from then on signals pass straight on.
    stopping = False

    def forward(signum: int) -> None:
        logger.info(
            "Received %s; passing it to %s worker process(es)",
            signal.Signals(signum).name,
            len(children),
            extra={"action": "signal_received"},
        )
        for child in children:
            if child.process.poll() is None:
                child.process.send_signal(signum)

    def record(signum: int, frame: FrameType | None) -> None:
        # Until the loop below ends, a signal is only recorded: passed on from here, it could
        # fall between a restart's spawn and the new child's assignment, and miss that child.
        received.append(signum)
        if stopping:
            forward(signum)

    previous = {signum: signal.signal(signum, record) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        while not received:
            if parent is not None and os.getppid() != parent:
                logger.warning(
                    "The parent process (pid %s) is gone; stopping the worker processes",
                    parent,
                    extra={"action": "parent_gone", "pid": parent},
                )
                received.append(signal.SIGTERM)
                break
            broken = [child for child in children if child.process.poll() == CONFIGURATION_ERROR]
            if broken:
                return _stop_on_configuration_error(broken[0], children)
            now = time.monotonic()
            for child in children:
                child.restart_if_dead(now)
            time.sleep(0.1)
        #: Children that had died before the stop, awaiting their restart (a crash's back-off).
        dead = [child for child in children if child.process.poll() is not None]
        stopping = True
        forward(received[0])
        codes = [child.process.wait() for child in children]
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    for child in dead:
        logger.warning(
            "Worker process %s (pid %s) exited with %s before the stop; not restarting it",
            child.slot,
            child.process.pid,
            child.process.returncode,
            extra={
                "action": "worker_process_died",
                "pid": child.process.pid,
                "code": child.process.returncode,
            },
        )
    logger.info("All worker processes stopped: exit codes %s", codes, extra={"action": "supervisor_stopped"})
    # The exit code says how the stop went. A worker that had died before it was already dealt
    # with (its jobs are rescued; it would have been restarted); one restarted a moment before
    # the signal may die of it before it handles signals, that is before it claims anything.
    clean = {0, *(-signum for signum in received)}
    stopped = [child.process.returncode for child in children if child not in dead]
    return 0 if all(code in clean for code in stopped) else 1


def _stop_on_configuration_error(broken: _Child, children: list[_Child]) -> int:
    """Stop every other child and return the exit code of a configuration error."""
    logger.error(
        "Worker process %s (pid %s) exited with %s, a configuration error (see above): "
        "restarting it would not help; stopping the other worker processes",
        broken.slot,
        broken.process.pid,
        CONFIGURATION_ERROR,
        extra={"action": "supervisor_configuration_error", "pid": broken.process.pid},
    )
    for child in children:
        if child.process.poll() is None:
            child.process.send_signal(signal.SIGTERM)
    for child in children:
        child.process.wait()
    return CONFIGURATION_ERROR

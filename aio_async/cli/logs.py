"""What the command line shows of aio_async's log records, and how loudly."""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from aio_async.cli.options import VERBOSITY_LEVELS

if TYPE_CHECKING:
    from _typeshed import SupportsWrite
    from django.core.management.base import OutputWrapper

__all__ = ["LOG_FORMAT", "command_logging", "job_logging"]

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


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
    """Show aio_async's records while the block runs (at INFO: failures, the worker's life, summaries).

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

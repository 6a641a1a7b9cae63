"""Tasks for the django-tasks-db peer benchmark (Django 6 django.tasks API)."""

from __future__ import annotations

import os
import time

from django.tasks import task


def _append_line(path: str, line: str) -> None:
    """Append one line to a file."""
    with open(path, "a") as f:
        f.write(line + "\n")


@task
def noop() -> None:
    """Do nothing."""


@task
def stamp(enq: float) -> None:
    """Append 'enqueue_time start_time' to the file named by BENCH_LAT_FILE."""
    _append_line(os.environ["BENCH_LAT_FILE"], f"{enq!r} {time.time()!r}")

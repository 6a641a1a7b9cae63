"""Fill a database the tests cannot reach.

``python -m tests.acceptance.jobctl schedule N SECONDS``: N jobs that sleep SECONDS, then write
a row keyed by their number. ``python -m tests.acceptance.jobctl serve``: one job a line read
from stdin (the line is the row's key), its id printed once committed: a job scheduled in
milliseconds, Django already set up.
"""

from __future__ import annotations

import sys

import django


def main() -> None:
    """Schedule the jobs the command line asks for."""
    django.setup()
    from django.db import close_old_connections

    from aio_async import schedule
    from tests.app import tasks

    if sys.argv[1] == "serve":
        for line in sys.stdin:
            close_old_connections()  # the database may have restarted since the last line
            job = schedule(tasks.sleep_then_write, [line.strip(), 0.0])
            print(job.pk, flush=True)
        return
    count, seconds = int(sys.argv[2]), float(sys.argv[3])
    for index in range(count):
        schedule(tasks.sleep_then_write, [f"job-{index}", seconds], max_attempts=20)


if __name__ == "__main__":
    main()

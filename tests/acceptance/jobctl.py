"""``python -m tests.acceptance.jobctl schedule N SECONDS``: fill a database the tests cannot reach."""

from __future__ import annotations

import sys

import django


def main() -> None:
    """Schedule N jobs that sleep SECONDS, then write a row keyed by their number."""
    django.setup()
    from aio_async import schedule
    from tests.app import tasks

    count, seconds = int(sys.argv[2]), float(sys.argv[3])
    for index in range(count):
        schedule(tasks.sleep_then_write, [f"job-{index}", seconds], max_attempts=20)


if __name__ == "__main__":
    main()

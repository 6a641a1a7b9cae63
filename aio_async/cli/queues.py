"""The ``queues`` verb: list the queues, or pause or resume one."""

from __future__ import annotations

import argparse
import json
import sys

from aio_async.supervisor import CONFIGURATION_ERROR

__all__ = ["queues_verb"]


def queues_verb(options: argparse.Namespace, using: str) -> int:
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

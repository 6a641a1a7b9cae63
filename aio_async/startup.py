"""What a worker says as it starts, beside the store's checks: tasks it will never run.

A task registered with ``@aio_async.task(queue="mail")`` waits for a worker that serves
``mail``; a worker started with the default queues would leave its jobs queued forever
without a word. The warning names the tasks and the option that serves them.
"""

from __future__ import annotations

import logging

from aio_async.allow import registered
from aio_async.conf import EVERY_QUEUE, QueueSettings

__all__ = ["unserved_queues", "warn_unserved_queues"]

logger = logging.getLogger("aio_async.executor")

#: The queue of a task that names none (as ``schedule()`` defaults it).
DEFAULT_QUEUE = "default"


def unserved_queues(settings: QueueSettings) -> dict[str, list[str]]:
    """The registered tasks whose queue ``settings.queues`` leaves out, by queue, sorted."""
    if EVERY_QUEUE in settings.queues:
        return {}
    unserved: dict[str, list[str]] = {}
    for name, target in sorted(registered().items()):
        queue = target.options.queue or DEFAULT_QUEUE
        if queue not in settings.queues:
            unserved.setdefault(queue, []).append(name)
    return dict(sorted(unserved.items()))


def warn_unserved_queues(settings: QueueSettings) -> dict[str, list[str]]:
    """Log one warning naming the registered tasks this worker will not run; return them."""
    unserved = unserved_queues(settings)
    if unserved:
        logger.warning(
            "This worker serves queue(s) %s, not %s: %s will wait for a worker that does "
            "(start one with %s, or --queue '*' for every queue)",
            ", ".join(settings.queues),
            ", ".join(unserved),
            "; ".join(f"{queue}: {', '.join(names)}" for queue, names in unserved.items()),
            " ".join(f"--queue {queue}" for queue in unserved),
            extra={"action": "unserved_queues", "queues": unserved},
        )
    return unserved

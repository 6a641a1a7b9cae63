"""The queue's figures over a recent window, read without counting the finished history.

``queue_figures`` runs ``statements.queue_counts`` and ``statements.pickup_latencies``: each
part of them reads through a partial index, so that the cost follows the unfinished jobs and
those the window saw, however many finished jobs the table keeps.
"""

from __future__ import annotations

import datetime

from aio_async.store import statements as sql
from aio_async.store.dialects import Dialect
from aio_async.store.statements import Op, Rows

__all__ = ["queue_figures"]


def queue_figures(
    dialect: Dialect, now: datetime.datetime, since: datetime.datetime
) -> Op[tuple[Rows, Rows]]:
    """The rows of ``queue_counts`` and of ``pickup_latencies`` for the window from ``since`` to ``now``."""
    counts = yield sql.queue_counts(dialect), [now, now, now, since, since, since]
    latencies = yield sql.pickup_latencies(dialect), [since] * 8
    return counts, latencies

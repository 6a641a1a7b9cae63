"""Where a worker's claims reached in its queue, so that a claim need not walk what it claimed.

A claim reads the claim index from its head. Each job it leases leaves an entry there that only
vacuum removes, and vacuum removes nothing that a transaction open anywhere in the database
(a ``pg_dump``, a long report, a session idle in a transaction) might still see. While such a
transaction lasts, every claim walks all the entries left since it began, and checks each one's
row: the claim slows without bound (see docs/performance.md).

So the store keeps, for each queue and priority it claimed from, the position its claims reached,
and when a full claim (a *sweep*) has become slow, it claims from there instead
(``statements.claim_after``): what lies past the frontier is what was queued since, and the
dead entries lie behind it. Jobs can land behind the frontier too: just behind (a transaction
that committed after later jobs were claimed, a row that was locked as the claims passed it),
or anywhere (a priority or a queue it has not seen, a job due long ago). A claim past the
frontier that finds nothing looks two seconds behind it instead (at most four times a second),
and a full claim sweeps the whole queue every five seconds (less often while a sweep costs
more than 50 ms). A sweep that is fast again ends it: the claims go back to the strict order
of a full claim.

What changes while the frontier is in use: jobs are still claimed in order past the frontier,
and no job is left behind, but one that landed just behind it waits up to a quarter of a
second more, and one further behind up to the next sweep. ``AIO_ASYNC["CLAIM_FRONTIER"]``
chooses: ``"auto"`` (this), ``"always"`` (tests, and queues always under a long transaction)
or ``"never"``.
"""

from __future__ import annotations

import datetime
import math
from collections.abc import Collection, Iterable

from aio_async.values import Attempt

__all__ = ["Frontier"]

#: Sweeps slower than this (seconds, round trip included), ``ENGAGE_AFTER`` in a row, start the
#: claims at the frontier: one slow sweep (a new connection, a pause) is not a trend.
ENGAGE = 0.005
ENGAGE_AFTER = 3
#: A sweep faster than this goes back to full claims.
RELEASE = 0.002
#: Queue and priority pairs the frontier keeps a position for (the ones most recently claimed).
LEVELS = 8
#: Seconds between sweeps while claims start at the frontier: at least this, and at least
#: ``SWEEP_SHARE`` times a sweep's own cost, so that sweeps take a small share of the claims'
#: time however slow they have become (a sweep holds up the claims behind it).
SWEEP_EVERY = 5.0
SWEEP_SHARE = 100
#: A claim past the frontier that found nothing looks ``LOOK_BACK`` behind it (in due time)
#: instead, at most every ``LOOK_BACK_EVERY`` seconds: what landed just behind (a transaction
#: that committed late, a row that was locked) is found within a second at the cost of
#: walking a few seconds' claimed entries, not all of them.
LOOK_BACK = datetime.timedelta(seconds=2)
LOOK_BACK_EVERY = 0.25


class Frontier:
    """Where one worker's claims reached, by queue and priority, and when to sweep instead."""

    def __init__(self, mode: str = "auto") -> None:
        self.mode = mode
        #: Claims start here when engaged.
        self.engaged = mode == "always"
        #: (queue, priority) -> (run_after, id) of the last job claimed there; most recent last.
        self.positions: dict[tuple[str, int], tuple[datetime.datetime, int]] = {}
        self.swept_at = -math.inf
        self.sweep_cost = 0.0
        self.slow_sweeps = 0
        self.looked_back_at = -math.inf

    def levels(
        self, paused: Collection[str] = (), *, back: bool = False
    ) -> list[tuple[str, int, datetime.datetime, int]]:
        """The positions as (queue, priority, run_after, id), highest priority first; none in ``paused``.

        With ``back``, each position ``LOOK_BACK`` earlier.
        """
        levels = []
        for queue, priority in sorted(self.positions, key=lambda level: (-level[1], level[0])):
            if queue in paused:
                continue
            run_after, job_id = self.positions[queue, priority]
            levels.append(
                (queue, priority, run_after - LOOK_BACK, 0) if back else (queue, priority, run_after, job_id)
            )
        return levels

    def claims_past(self, now: float) -> bool:
        """True when the next claim should start at the frontier; False: sweep."""
        if not self.engaged or not self.positions:
            return False
        return now - self.swept_at < max(SWEEP_EVERY, SWEEP_SHARE * self.sweep_cost)

    def looks_back(self, now: float) -> bool:
        """True when a claim past the frontier that found nothing should look a little behind it."""
        if now - self.looked_back_at < LOOK_BACK_EVERY:
            return False
        self.looked_back_at = now
        return True

    def advance(self, attempts: Iterable[Attempt]) -> None:
        """Move the frontier past the jobs just claimed (never back)."""
        for attempt in attempts:
            if attempt.due is None:
                continue
            reached = (attempt.due, attempt.job_id)
            level = (attempt.queue, attempt.priority)
            known = self.positions.pop(level, None)
            self.positions[level] = reached if known is None else max(known, reached)
        while len(self.positions) > LEVELS:
            del self.positions[next(iter(self.positions))]

    def swept(self, now: float, cost: float, attempts: Iterable[Attempt]) -> None:
        """Record a sweep (a full claim), what it cost and what it claimed."""
        self.swept_at = now
        self.sweep_cost = cost
        if self.engaged or cost > ENGAGE:
            # Positions matter only once claims start at them: while sweeps are fast, keeping
            # them would cost every claim a little for nothing. A slow sweep records where it
            # reached, so that the frontier knows its positions when it engages.
            self.advance(attempts)
        if self.mode != "auto":
            return
        self.slow_sweeps = self.slow_sweeps + 1 if cost > ENGAGE else 0
        if self.engaged:
            self.engaged = cost > RELEASE
        else:
            self.engaged = self.slow_sweeps >= ENGAGE_AFTER

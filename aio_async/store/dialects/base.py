"""What differs between the databases: SQL fragments and capability flags."""

from __future__ import annotations

import dataclasses

__all__ = ["Dialect"]


@dataclasses.dataclass(frozen=True)
class Dialect:
    """What differs between the databases, as fragments of SQL."""

    vendor: str
    #: LISTEN/NOTIFY: wake-ups, cancellations and pauses are sent on commit (else workers poll).
    notifies: bool
    #: Transaction-scoped advisory locks: claimers of a limit key take turns (else the claim is
    #: one statement, and the database has one writer at a time).
    advisory_locks: bool
    #: An update leaves the old row version, and its index entries, until vacuum: a worker's
    #: claims may start where the last ones reached (``store.frontier``). SQLite updates in place.
    frontier: bool
    #: After the claim's SELECT: skip rows another worker holds.
    skip_locked: str
    #: After a SELECT that must block other writers of the row.
    for_update: str
    #: The rows of the JSON parameter ``[[id, attempt, value], ...]``, as ``mine``.
    mine: str
    #: ``mine.value`` as a JSON column value.
    json_value: str
    #: A JSON column, as text (so that one undecodable row cannot fail a whole fetch).
    json_text: str
    #: The job's ``meta`` with its ``snoozed`` count one higher.
    snoozed_meta: str
    #: ``id`` among the ids a subquery returns. PostgreSQL plans ``= ANY(ARRAY(...))`` as
    #: lookups in the primary key; it plans ``IN (...)`` as a hash join over the whole table.
    id_among: str
    #: Seconds from ``{earlier}`` to ``{later}`` (two datetime columns), as a float.
    seconds_between: str
    #: A parameter holding JSON text, as a JSON column's value.
    json_param: str

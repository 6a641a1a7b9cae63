"""SQLite: one writer at a time, so a claim is one ``UPDATE … RETURNING``; workers poll."""

from __future__ import annotations

from aio_async.store.dialects.base import Dialect
from aio_async.store.tables import JOB

__all__ = ["SQLITE"]

SQLITE = Dialect(
    vendor="sqlite",
    notifies=False,
    frontier=False,
    advisory_locks=False,
    skip_locked="",  # one writer at a time: the claim's UPDATE is exclusive already
    for_update="",
    mine=(
        "(SELECT json_extract(r.value, '$[0]') AS id, json_extract(r.value, '$[1]') AS attempt, "
        "json_extract(r.value, '$[2]') AS value FROM json_each(%s) AS r) AS mine"
    ),
    json_value="mine.value",
    json_text="{column}",
    snoozed_meta=f"json_set({JOB}.meta, '$.snoozed', COALESCE(json_extract({JOB}.meta, '$.snoozed'), 0) + 1)",
    id_among="id IN ({ids})",
    seconds_between="(julianday({later}) - julianday({earlier})) * 86400.0",
    json_param="%s",
)

"""PostgreSQL: ``FOR UPDATE SKIP LOCKED`` claims, LISTEN/NOTIFY, advisory locks for limit keys."""

from __future__ import annotations

from aio_async.store.dialects.base import Dialect
from aio_async.store.tables import JOB

__all__ = ["POSTGRESQL"]

POSTGRESQL = Dialect(
    vendor="postgresql",
    notifies=True,
    frontier=True,
    advisory_locks=True,
    skip_locked=" FOR UPDATE SKIP LOCKED",
    for_update=" FOR UPDATE",
    mine=(
        "(SELECT (r.value->>0)::bigint AS id, (r.value->>1)::integer AS attempt, r.value->>2 AS value "
        "FROM json_array_elements(%s::json) AS r(value)) AS mine"
    ),
    json_value="mine.value::jsonb",
    json_text="{column}::text",
    snoozed_meta=(
        f"jsonb_set({JOB}.meta, '{{snoozed}}', to_jsonb(COALESCE(({JOB}.meta->>'snoozed')::integer, 0) + 1))"
    ),
    id_among="id = ANY(ARRAY({ids}))",
    seconds_between="EXTRACT(EPOCH FROM {later} - {earlier})::float8",
)

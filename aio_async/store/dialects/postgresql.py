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
        # Each element is an [id, attempt, value] triple: saying so also tells the planner that
        # ``mine`` holds a row or a few, not the hundred it assumes of a set-returning function,
        # so that it finds each job by its primary key (a scan of the table, or of an index
        # whose condition a fenced write implies, grows with the jobs run since vacuum last ran).
        "FROM json_array_elements(%s::json) AS r(value) WHERE json_typeof(r.value) = 'array') AS mine"
    ),
    json_value="mine.value::jsonb",
    json_text="{column}::text",
    snoozed_meta=(
        f"jsonb_set({JOB}.meta, '{{snoozed}}', to_jsonb(COALESCE(({JOB}.meta->>'snoozed')::integer, 0) + 1))"
    ),
    id_among="id = ANY(ARRAY({ids}))",
    seconds_between="EXTRACT(EPOCH FROM {later} - {earlier})::float8",
    json_param="%s::jsonb",
)

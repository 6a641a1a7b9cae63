"""PostgreSQL: NOTIFY from a trigger, in the transaction that queues the job.

Every row that becomes queued and due (inserted, retried now, released, a group's final
job let go) wakes the workers of its queue when its transaction commits, and never before.
Doing it in the database costs ``schedule()`` no extra round trip. SQLite has no NOTIFY:
its workers poll.
"""

from __future__ import annotations

from django.db import migrations
from django.db.backends.base.schema import BaseDatabaseSchemaEditor
from django.db.migrations.state import StateApps

CREATE = """
CREATE OR REPLACE FUNCTION aio_async_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('aio_async', NEW.queue);
    RETURN NULL;
END $$;
CREATE TRIGGER aio_async_notify AFTER INSERT OR UPDATE OF status ON aio_async_job
    FOR EACH ROW WHEN (NEW.status = 'queued' AND NEW.run_after <= clock_timestamp() + interval '1 second')
    EXECUTE FUNCTION aio_async_notify();
"""
DROP = """
DROP TRIGGER IF EXISTS aio_async_notify ON aio_async_job;
DROP FUNCTION IF EXISTS aio_async_notify();
"""


def create(apps: StateApps, schema_editor: BaseDatabaseSchemaEditor) -> None:
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(CREATE)


def drop(apps: StateApps, schema_editor: BaseDatabaseSchemaEditor) -> None:
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(DROP)


class Migration(migrations.Migration):
    dependencies = [("aio_async", "0001_initial")]
    operations = [migrations.RunPython(create, drop, elidable=False)]

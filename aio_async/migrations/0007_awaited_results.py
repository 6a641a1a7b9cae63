"""Awaitable results: a job someone waits for says when it finished, in its own transaction.

- ``awaited``: set by ``result()`` on the job it waits for.
- PostgreSQL: a trigger sends ``NOTIFY aio_async_done, '<id>'`` when an awaited job reaches a
  final status, inside the transaction that finishes it, so that the waiter wakes on commit.
  Jobs nobody waits for send nothing. SQLite has no NOTIFY: ``result()`` polls there.
"""

from __future__ import annotations

from django.db import migrations, models
from django.db.backends.base.schema import BaseDatabaseSchemaEditor
from django.db.migrations.state import StateApps

CREATE = """
CREATE OR REPLACE FUNCTION aio_async_notify_done() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('aio_async_done', NEW.id::text);
    RETURN NULL;
END $$;
CREATE TRIGGER aio_async_notify_done AFTER UPDATE OF status ON aio_async_job
    FOR EACH ROW WHEN (NEW.awaited AND NEW.status IN ('succeeded', 'failed', 'cancelled'))
    EXECUTE FUNCTION aio_async_notify_done();
"""
DROP = """
DROP TRIGGER IF EXISTS aio_async_notify_done ON aio_async_job;
DROP FUNCTION IF EXISTS aio_async_notify_done();
"""


def create(apps: StateApps, schema_editor: BaseDatabaseSchemaEditor) -> None:
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(CREATE)


def drop(apps: StateApps, schema_editor: BaseDatabaseSchemaEditor) -> None:
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(DROP)


class Migration(migrations.Migration):
    dependencies = [("aio_async", "0006_periodic_ticks")]

    operations = [
        migrations.AddField(
            model_name="job",
            name="awaited",
            field=models.BooleanField(db_default=False, default=False),
        ),
        migrations.RunPython(create, drop, elidable=False),
    ]

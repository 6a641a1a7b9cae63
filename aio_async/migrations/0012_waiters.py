"""Waiters apart from the job: ``result()`` records a wait in a table of its own.

A waiter used to set the job's ``awaited`` column: an UPDATE of a queued job's row, which a
worker's claim (``FOR UPDATE SKIP LOCKED``) then skipped, leaving the job until its next poll.

- PostgreSQL: ``aio_async_waiter`` holds one row per wait (the job's id, no foreign key: a key
  check would lock the job's row too), removed when the wait ends. It is UNLOGGED: a wait does
  not outlive a server crash (its connection dies with it), so its rows need no WAL.
- The trigger of migration 0007 is replaced: a job reaching a final status runs it, and it
  sends ``NOTIFY aio_async_done, '<id>'`` when a waiter's row names the job (one probe of the
  table's primary key per finished job; jobs nobody waits for send nothing). It still honours
  ``awaited``, which processes of an older version set until they are restarted.
- SQLite has no NOTIFY: waiters poll, and need no table.
"""

from __future__ import annotations

from django.db import migrations
from django.db.backends.base.schema import BaseDatabaseSchemaEditor
from django.db.migrations.state import StateApps

CREATE = """
CREATE UNLOGGED TABLE IF NOT EXISTS aio_async_waiter (
    job_id bigint NOT NULL,
    id bigint GENERATED ALWAYS AS IDENTITY,
    since timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (job_id, id)
);
CREATE OR REPLACE FUNCTION aio_async_notify_done() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.awaited OR EXISTS (SELECT FROM aio_async_waiter WHERE job_id = NEW.id) THEN
        PERFORM pg_notify('aio_async_done', NEW.id::text);
    END IF;
    RETURN NULL;
END $$;
DROP TRIGGER IF EXISTS aio_async_notify_done ON aio_async_job;
CREATE TRIGGER aio_async_notify_done AFTER UPDATE OF status ON aio_async_job
    FOR EACH ROW WHEN (NEW.status IN ('succeeded', 'failed', 'cancelled'))
    EXECUTE FUNCTION aio_async_notify_done();
"""
#: Back to migration 0007's trigger.
DROP = """
CREATE OR REPLACE FUNCTION aio_async_notify_done() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('aio_async_done', NEW.id::text);
    RETURN NULL;
END $$;
DROP TRIGGER IF EXISTS aio_async_notify_done ON aio_async_job;
CREATE TRIGGER aio_async_notify_done AFTER UPDATE OF status ON aio_async_job
    FOR EACH ROW WHEN (NEW.awaited AND NEW.status IN ('succeeded', 'failed', 'cancelled'))
    EXECUTE FUNCTION aio_async_notify_done();
DROP TABLE IF EXISTS aio_async_waiter;
"""


def create(apps: StateApps, schema_editor: BaseDatabaseSchemaEditor) -> None:
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(CREATE)


def drop(apps: StateApps, schema_editor: BaseDatabaseSchemaEditor) -> None:
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(DROP)


class Migration(migrations.Migration):
    dependencies = [("aio_async", "0011_orphaned_dependencies")]

    operations = [migrations.RunPython(create, drop, elidable=False)]

"""One ``finished`` time for every final status; attempts that are excused; jobs run alone.

- ``executed`` (set on success) and ``cancelled`` (set on cancel) become one column,
  ``finished``: when the job reached its final status. A failed job's is its last error's time.
- ``excused``: attempts that do not count against ``max_attempts`` (a worker lost while the
  job shared it, a clean shutdown), so that ``attempts`` stays the fencing token.
- ``isolated``: the job's next attempt runs alone in its worker.
"""

from django.db import migrations, models
from django.db.backends.base.schema import BaseDatabaseSchemaEditor
from django.db.migrations.state import StateApps
from django.db.models import Max, OuterRef, Subquery


def fill_finished(apps: StateApps, schema_editor: BaseDatabaseSchemaEditor) -> None:
    Job = apps.get_model("aio_async", "Job")
    Error = apps.get_model("aio_async", "Error")
    alias = schema_editor.connection.alias
    jobs = Job.objects.using(alias)
    jobs.filter(status="cancelled", finished__isnull=True).update(finished=models.F("cancelled"))
    last_error = (
        Error.objects.using(alias).filter(job=OuterRef("pk")).values("job").annotate(at=Max("created"))
    )
    jobs.filter(status="failed", finished__isnull=True).update(finished=Subquery(last_error.values("at")[:1]))


class Migration(migrations.Migration):
    dependencies = [("aio_async", "0003_slimmer_indexes")]

    operations = [
        migrations.RemoveIndex(model_name="job", name="aio_async_job_succeeded"),
        migrations.RenameField(model_name="job", old_name="executed", new_name="finished"),
        migrations.RunPython(fill_finished, migrations.RunPython.noop, elidable=True),
        migrations.RemoveField(model_name="job", name="cancelled"),
        migrations.AddIndex(
            model_name="job",
            index=models.Index(
                condition=models.Q(("status", "succeeded")),
                fields=["finished"],
                name="aio_async_job_succeeded",
            ),
        ),
        migrations.AddField(model_name="job", name="excused", field=models.PositiveIntegerField(default=0)),
        migrations.AddField(model_name="job", name="isolated", field=models.BooleanField(default=False)),
    ]

"""Unique jobs: a job's key while it counts, under a unique index, and the states that count.

- ``unique_key``: a hash, set on a unique job while it is in one of its ``unique_states`` and
  cleared by the write that moves it out of them; NULL on every other job.
- ``unique_states``: those states, comma-separated; the database's default is "", so that a
  process still running the release before (a rolling deploy) can go on scheduling jobs.
- ``aio_async_job_unique``: the key is one job's at a time. Partial (keys only), so the rows of
  jobs that are not unique, or no longer count, are not in it.
"""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("aio_async", "0004_finished_isolated_excused")]

    operations = [
        migrations.AddField(
            model_name="job",
            name="unique_key",
            field=models.CharField(blank=True, max_length=64, null=True),
        ),
        migrations.AddField(
            model_name="job",
            name="unique_states",
            field=models.CharField(blank=True, db_default="", default="", max_length=64),
        ),
        migrations.AddConstraint(
            model_name="job",
            constraint=models.UniqueConstraint(
                condition=models.Q(("unique_key__isnull", False)),
                fields=("unique_key",),
                name="aio_async_job_unique",
            ),
        ),
    ]

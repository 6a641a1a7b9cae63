"""Dependencies: a job that runs after others (``schedule(..., after=[...])``).

``Dependency`` rows name what each waiting job waits for; ``has_dependents`` tells whatever
finishes a job that it has jobs to settle; a partial index finds the waiting jobs.
"""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("aio_async", "0007_awaited_results"),
    ]

    operations = [
        migrations.CreateModel(
            name="Dependency",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
            ],
        ),
        migrations.AddField(
            model_name="job",
            name="has_dependents",
            field=models.BooleanField(db_default=False, default=False),
        ),
        migrations.AddIndex(
            model_name="job",
            index=models.Index(
                condition=models.Q(("status", "waiting")), fields=["id"], name="aio_async_job_waiting"
            ),
        ),
        migrations.AddField(
            model_name="dependency",
            name="after",
            field=models.ForeignKey(
                on_delete=django.db.models.deletion.CASCADE, related_name="dependents", to="aio_async.job"
            ),
        ),
        migrations.AddField(
            model_name="dependency",
            name="job",
            field=models.ForeignKey(
                db_index=False,
                on_delete=django.db.models.deletion.CASCADE,
                related_name="dependencies",
                to="aio_async.job",
            ),
        ),
        migrations.AddConstraint(
            model_name="dependency",
            constraint=models.UniqueConstraint(fields=("job", "after"), name="aio_async_dependency_unique"),
        ),
    ]

"""A dependency outlives its prerequisite's deletion, so that the job waiting on it is cancelled."""

from django.db import migrations, models

import aio_async.models


class Migration(migrations.Migration):
    dependencies = [
        ("aio_async", "0010_queues_and_workers"),
    ]

    operations = [
        migrations.AlterField(
            model_name="dependency",
            name="after",
            field=models.ForeignKey(
                null=True,
                on_delete=aio_async.models.forget_or_orphan,
                related_name="dependents",
                to="aio_async.job",
            ),
        ),
    ]

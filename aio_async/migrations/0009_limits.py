"""Concurrency and rate limits: a job's limit key and limits, and the indexes of their claim.

The claim index now holds only jobs without limits; jobs with limits have an index of their
own, and two more count the running jobs and the recent starts of a key.
"""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("aio_async", "0008_dependencies"),
    ]

    operations = [
        migrations.RemoveIndex(
            model_name="job",
            name="aio_async_job_claim",
        ),
        migrations.AddField(
            model_name="job",
            name="concurrency_limit",
            field=models.PositiveIntegerField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="job",
            name="limit_key",
            field=models.CharField(blank=True, max_length=255, null=True),
        ),
        migrations.AddField(
            model_name="job",
            name="rate_count",
            field=models.PositiveIntegerField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="job",
            name="rate_period",
            field=models.FloatField(blank=True, null=True),
        ),
        migrations.AddIndex(
            model_name="job",
            index=models.Index(
                condition=models.Q(("limit_key__isnull", True), ("status", "queued")),
                fields=["queue", "-priority", "run_after", "id"],
                name="aio_async_job_claim",
            ),
        ),
        migrations.AddIndex(
            model_name="job",
            index=models.Index(
                condition=models.Q(("limit_key__isnull", False), ("status", "queued")),
                fields=["queue", "-priority", "run_after", "id"],
                name="aio_async_job_limited",
            ),
        ),
        migrations.AddIndex(
            model_name="job",
            index=models.Index(
                condition=models.Q(("limit_key__isnull", False), ("status", "running")),
                fields=["limit_key"],
                name="aio_async_job_limit_running",
            ),
        ),
        migrations.AddIndex(
            model_name="job",
            index=models.Index(
                condition=models.Q(("rate_count__isnull", False)),
                fields=["limit_key", "started"],
                name="aio_async_job_limit_started",
            ),
        ),
    ]

"""Durable steps: each job's journal (``aio_async_step``), events (``aio_async_event``), suspended jobs.

A job in a durable sleep or waiting for an event has the new status ``suspended``; its
``run_after`` is when it wakes (a sleep's end, a wait's timeout). The partial index
``aio_async_job_suspended`` holds those rows only, so that no claim reads them.
"""

import django.db.models.deletion
import django.utils.timezone
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("aio_async", "0014_lease_index_for_the_rescue_only"),
    ]

    operations = [
        migrations.CreateModel(
            name="Event",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("key", models.CharField(max_length=255)),
                ("payload", models.JSONField(blank=True, null=True)),
                ("sent", models.DateTimeField(default=django.utils.timezone.now)),
            ],
            options={
                "db_table": "aio_async_event",
                "ordering": ["-sent", "-id"],
            },
        ),
        migrations.CreateModel(
            name="Step",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("name", models.CharField(max_length=255)),
                ("position", models.PositiveIntegerField()),
                (
                    "kind",
                    models.CharField(
                        choices=[
                            ("step", "step"),
                            ("sleep", "durable sleep"),
                            ("event", "wait for an event"),
                        ],
                        max_length=8,
                    ),
                ),
                (
                    "status",
                    models.CharField(
                        choices=[
                            ("succeeded", "succeeded"),
                            ("failed", "failed (runs again)"),
                            ("sleeping", "sleeping"),
                            ("waiting", "waiting for its event"),
                            ("timed_out", "timed out"),
                        ],
                        max_length=16,
                    ),
                ),
                ("result", models.JSONField(blank=True, null=True)),
                ("error", models.TextField(blank=True, default="")),
                ("attempt", models.PositiveIntegerField()),
                ("worker", models.CharField(blank=True, default="", max_length=255)),
                ("started", models.DateTimeField(blank=True, null=True)),
                ("ended", models.DateTimeField(blank=True, null=True)),
                ("until", models.DateTimeField(blank=True, null=True)),
                ("key", models.CharField(blank=True, max_length=255, null=True)),
                ("event_id", models.BigIntegerField(blank=True, null=True)),
            ],
            options={
                "db_table": "aio_async_step",
                "ordering": ["job", "position", "id"],
            },
        ),
        migrations.AlterField(
            model_name="attemptrecord",
            name="outcome",
            field=models.CharField(
                choices=[
                    ("succeeded", "succeeded"),
                    ("failed", "failed"),
                    ("retried", "retried"),
                    ("lost", "lost"),
                    ("timed_out", "timed_out"),
                    ("snoozed", "snoozed"),
                    ("released", "released"),
                    ("cancelled", "cancelled"),
                    ("suspended", "suspended"),
                    ("running", "running"),
                ],
                max_length=16,
            ),
        ),
        migrations.AlterField(
            model_name="job",
            name="status",
            field=models.CharField(
                choices=[
                    ("waiting", "waiting for its group"),
                    ("queued", "queued"),
                    ("running", "running"),
                    ("succeeded", "succeeded"),
                    ("failed", "failed"),
                    ("cancelled", "cancelled"),
                    ("suspended", "suspended (sleeping or waiting for an event)"),
                ],
                default="queued",
                max_length=16,
            ),
        ),
        migrations.AddIndex(
            model_name="job",
            index=models.Index(
                condition=models.Q(("status", "suspended")),
                fields=["run_after"],
                name="aio_async_job_suspended",
            ),
        ),
        migrations.AddIndex(
            model_name="event",
            index=models.Index(fields=["key", "id"], name="aio_async_event_key"),
        ),
        migrations.AddIndex(
            model_name="event",
            index=models.Index(fields=["sent"], name="aio_async_event_sent"),
        ),
        migrations.AddField(
            model_name="step",
            name="job",
            field=models.ForeignKey(
                db_index=False,
                on_delete=django.db.models.deletion.CASCADE,
                related_name="steps",
                to="aio_async.job",
            ),
        ),
        migrations.AddIndex(
            model_name="step",
            index=models.Index(
                condition=models.Q(("status", "waiting")), fields=["key"], name="aio_async_step_waiting"
            ),
        ),
        migrations.AddConstraint(
            model_name="step",
            constraint=models.UniqueConstraint(fields=("job", "name"), name="aio_async_step_unique"),
        ),
    ]

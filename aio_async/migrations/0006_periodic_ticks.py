"""Periodic jobs: one row per tick of a schedule, unique on (schedule, tick)."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("aio_async", "0005_unique_jobs")]

    operations = [
        migrations.CreateModel(
            name="Tick",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("schedule", models.CharField(max_length=255)),
                ("tick", models.CharField(max_length=64)),
                ("at", models.DateTimeField()),
                ("job_id", models.BigIntegerField(blank=True, null=True)),
            ],
            options={
                "indexes": [models.Index(fields=["schedule", "-at"], name="aio_async_tick_latest")],
                "constraints": [
                    models.UniqueConstraint(fields=("schedule", "tick"), name="aio_async_tick_unique")
                ],
            },
        ),
    ]

"""Queues that can be paused, and the worker processes as they record themselves."""

import django.utils.timezone
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("aio_async", "0009_limits"),
    ]

    operations = [
        migrations.CreateModel(
            name="Queue",
            fields=[
                ("name", models.CharField(max_length=255, primary_key=True, serialize=False)),
                ("paused", models.BooleanField(default=False)),
                ("changed", models.DateTimeField(default=django.utils.timezone.now)),
                ("changed_by", models.CharField(blank=True, default="", max_length=255)),
            ],
        ),
        migrations.CreateModel(
            name="Worker",
            fields=[
                ("id", models.CharField(max_length=255, primary_key=True, serialize=False)),
                ("host", models.CharField(max_length=255)),
                ("pid", models.PositiveIntegerField()),
                ("queues", models.TextField()),
                ("concurrency", models.PositiveIntegerField()),
                ("started", models.DateTimeField()),
                ("heartbeat", models.DateTimeField()),
            ],
            options={
                "ordering": ["-started", "id"],
            },
        ),
    ]

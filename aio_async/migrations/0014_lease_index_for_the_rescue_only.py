"""The lease index serves the rescue's scan only.

Its condition was ``status = 'running'``, which every fenced write to a running job also says,
so PostgreSQL could plan a completion through it instead of the primary key. Under a long
transaction elsewhere (vacuum held back) the index keeps an entry for every job that ever ran,
and each completion then walked all of them. Its condition now also names ``locked_until``,
which no fenced write does; a running job without a lease (a row written by hand) has an index
of its own, empty in practice.
"""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("aio_async", "0013_attempt_history"),
    ]

    operations = [
        migrations.RemoveIndex(
            model_name="job",
            name="aio_async_job_lease",
        ),
        migrations.AddIndex(
            model_name="job",
            index=models.Index(
                condition=models.Q(("locked_until__isnull", False), ("status", "running")),
                fields=["locked_until"],
                name="aio_async_job_lease",
            ),
        ),
        migrations.AddIndex(
            model_name="job",
            index=models.Index(
                condition=models.Q(("locked_until__isnull", True), ("status", "running")),
                fields=["id"],
                name="aio_async_job_unleased",
            ),
        ),
    ]

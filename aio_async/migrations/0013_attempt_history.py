"""Every attempt kept, and the jobs that failed lately found without reading the others.

- ``aio_async_attempt`` records each attempt that ended without finishing its job (retried,
  lost with its worker, timed out, snoozed, released at a shutdown). The job's row holds the
  last attempt only, and each claim overwrote the one before; an attempt that finishes the job
  still needs no row (the job's row holds it), so a job that succeeds at its first attempt
  writes nothing more than before. Its rows are written in the transaction that requeues the
  job, and indexed by job and by end (``stats()`` reads those of the last minutes).
- The attempts already over are recorded from their Error rows: those earlier than the job's
  last attempt, or the last one when the job went back to the queue after it (one row per
  attempt; a cancellation before the attempt ran is not an attempt). A job's row holds its last
  attempt while it names its worker (``locked_by``, cleared by a requeue). Their start and the time
  they were due were never kept: both are NULL.
- ``aio_async_job_failed`` indexes ``finished`` of the failed jobs only, as
  ``aio_async_job_succeeded`` does for the succeeded ones: ``stats()`` counts the failures of
  its window from it instead of from every finished job. It is partial, so that claims and
  completions, which never write a failed row, add no entries to it.
"""

import django.db.models.deletion
from django.db import migrations, models

#: One row per attempt already over, from its first Error row (a cancel while the job was
#: queued is no attempt). The dates a job was due and its attempt started were never kept.
RECORD_PAST = """
INSERT INTO aio_async_attempt (job_id, number, due, started, ended, worker, outcome)
SELECT error.job_id, error.attempt, NULL, NULL, error.created, error.worker,
    CASE WHEN error.exception = 'aio_async.errors.WorkerLost' THEN 'lost'
         WHEN error.exception = 'aio_async.errors.JobCancelled' THEN 'cancelled'
         WHEN error.exception = 'TimeoutError' AND error.message LIKE 'the job ran past its timeout%'
             THEN 'timed_out'
         ELSE 'retried' END
FROM aio_async_error AS error JOIN aio_async_job AS job ON job.id = error.job_id
WHERE error.attempt > 0
    AND (error.attempt < job.attempts
         OR (error.attempt = job.attempts AND (job.status IN ('queued', 'waiting') OR job.locked_by = '')))
    AND (error.exception <> 'aio_async.errors.JobCancelled' OR error.message LIKE '%while it ran%')
    AND NOT EXISTS (
        SELECT 1 FROM aio_async_error AS earlier
        WHERE earlier.job_id = error.job_id AND earlier.attempt = error.attempt
            AND earlier.id < error.id
            AND (earlier.exception <> 'aio_async.errors.JobCancelled' OR earlier.message LIKE '%while it ran%')
    )
"""


class Migration(migrations.Migration):
    dependencies = [
        ("aio_async", "0012_waiters"),
    ]

    operations = [
        migrations.CreateModel(
            name="AttemptRecord",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("number", models.PositiveIntegerField()),
                ("due", models.DateTimeField(blank=True, null=True)),
                ("started", models.DateTimeField(blank=True, null=True)),
                ("ended", models.DateTimeField(blank=True, null=True)),
                ("worker", models.CharField(blank=True, default="", max_length=255)),
                (
                    "outcome",
                    models.CharField(
                        choices=[
                            ("succeeded", "succeeded"),
                            ("failed", "failed"),
                            ("retried", "retried"),
                            ("lost", "lost"),
                            ("timed_out", "timed_out"),
                            ("snoozed", "snoozed"),
                            ("released", "released"),
                            ("cancelled", "cancelled"),
                            ("running", "running"),
                        ],
                        max_length=16,
                    ),
                ),
                (
                    "job",
                    models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="attempt_records",
                        to="aio_async.job",
                    ),
                ),
            ],
            options={
                "db_table": "aio_async_attempt",
                "ordering": ["job", "number", "id"],
                "indexes": [
                    models.Index(fields=["job", "number"], name="aio_async_attempt_job"),
                    models.Index(fields=["ended"], name="aio_async_attempt_ended"),
                ],
            },
        ),
        migrations.AddIndex(
            model_name="job",
            index=models.Index(
                condition=models.Q(("status", "failed")), fields=["finished"], name="aio_async_job_failed"
            ),
        ),
        migrations.RunSQL(RECORD_PAST, migrations.RunSQL.noop),
    ]

"""The queue's three tables: Job, Error and Group.

The claim query reads queued jobs by queue, priority and ``run_after``; a partial index on
exactly those columns, limited to queued rows, keeps it an index scan however many finished
rows the table holds.
"""

from __future__ import annotations

from django.db import models
from django.db.models import Q
from django.utils import timezone

__all__ = ["Error", "Group", "Job", "Status"]


class Status(models.TextChoices):
    """Where a job is in its life."""

    WAITING = "waiting", "waiting for its group"
    QUEUED = "queued", "queued"
    RUNNING = "running", "running"
    SUCCEEDED = "succeeded", "succeeded"
    FAILED = "failed", "failed"
    CANCELLED = "cancelled", "cancelled"


#: States a job never leaves.
FINISHED = (Status.SUCCEEDED, Status.FAILED, Status.CANCELLED)


class Group(models.Model):
    """Jobs that belong together, with an optional final job that runs after all the others."""

    reference = models.CharField(max_length=255, db_index=True)
    description = models.TextField(blank=True, default="")
    created = models.DateTimeField(default=timezone.now)
    final = models.ForeignKey("Job", null=True, blank=True, on_delete=models.SET_NULL, related_name="ends")

    class Meta:
        ordering = ["-created", "-id"]

    def __str__(self) -> str:
        return self.reference

    def on_completion(self, job: Job) -> None:
        """Make ``job`` (a member of this group) run only once every other member has finished."""
        from aio_async import api  # models is the ground layer; the rule lives with schedule

        api.set_group_final(self, job)


class Job(models.Model):
    """One call of an allowed callable, with its arguments, its state and its lease."""

    name = models.CharField(max_length=1024)
    args = models.JSONField(default=list, blank=True)
    kwargs = models.JSONField(default=dict, blank=True)
    meta = models.JSONField(default=dict, blank=True)
    result = models.JSONField(null=True, blank=True)
    identity = models.CharField(max_length=64)

    queue = models.CharField(max_length=255, default="default")
    priority = models.IntegerField(default=5)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)

    added = models.DateTimeField(default=timezone.now)
    run_after = models.DateTimeField(default=timezone.now)
    started = models.DateTimeField(null=True, blank=True)
    executed = models.DateTimeField(null=True, blank=True)
    cancelled = models.DateTimeField(null=True, blank=True)

    attempts = models.PositiveIntegerField(default=0)
    max_attempts = models.PositiveIntegerField(default=5)
    timeout = models.FloatField(null=True, blank=True)
    #: The lease: who holds the job and until when. ``attempts`` is the fencing token.
    locked_by = models.CharField(max_length=255, blank=True, default="")
    locked_until = models.DateTimeField(null=True, blank=True)

    group = models.ForeignKey(
        Group, null=True, blank=True, on_delete=models.SET_NULL, related_name="jobs", db_index=False
    )

    class Meta:
        indexes = [
            models.Index(
                fields=["queue", "-priority", "run_after", "id"],
                name="aio_async_job_claim",
                condition=Q(status="queued"),
            ),
            models.Index(
                fields=["locked_until"],
                name="aio_async_job_lease",
                condition=Q(status="running"),
            ),
            # Every claim and completion rewrites the row, and each index without a condition
            # gets a new entry each time; so the rest are partial, holding only the rows asked for.
            models.Index(
                fields=["identity"],
                name="aio_async_job_pending",
                condition=Q(status__in=["queued", "waiting"]),
            ),
            models.Index(fields=["group"], name="aio_async_job_group", condition=Q(group__isnull=False)),
            models.Index(
                fields=["executed"], name="aio_async_job_succeeded", condition=Q(status="succeeded")
            ),
        ]

    def __str__(self) -> str:
        arguments = [repr(value) for value in self.args or []]
        arguments += sorted(f"{key}={value!r}" for key, value in (self.kwargs or {}).items())
        return f"{self.name}({', '.join(arguments)})"

    @property
    def done(self) -> bool:
        """True once the job has succeeded, failed for good or been cancelled."""
        return self.status in FINISHED


class Error(models.Model):
    """One failed attempt of a job: what was raised, where, and by which worker."""

    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="errors")
    attempt = models.PositiveIntegerField()
    exception = models.CharField(max_length=255)
    message = models.TextField(blank=True, default="")
    traceback = models.TextField(blank=True, default="")
    worker = models.CharField(max_length=255, blank=True, default="")
    created = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created", "-id"]

    def __str__(self) -> str:
        return f"{self.exception}: {self.message}"[:200]

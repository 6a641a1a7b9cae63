"""The queue's three tables, Job, Error and Group, and the rules of a group.

The claim query reads queued jobs by queue, priority and ``run_after``; a partial index on
exactly those columns, limited to queued rows, keeps it an index scan however many finished
rows the table holds.

The models sit just above the store: what a model method writes of the queue (a group's
final job) goes through the store's operations, as every other writer's does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.db import models, transaction
from django.db.models import Q
from django.utils import timezone

from aio_async.errors import GroupClosed, InvalidOption
from aio_async.store import operations
from aio_async.store.drivers.django import run
from aio_async.values import AttemptEnd, attempt_end

if TYPE_CHECKING:
    from django.db.models.deletion import Collector

__all__ = [
    "FINISHED",
    "UNFINISHED",
    "AttemptRecord",
    "Dependency",
    "Error",
    "Event",
    "Group",
    "Job",
    "Queue",
    "Status",
    "Step",
    "StepKind",
    "StepStatus",
    "Tick",
    "Worker",
]


class Status(models.TextChoices):
    """Where a job is in its life."""

    WAITING = "waiting", "waiting for its group"
    QUEUED = "queued", "queued"
    RUNNING = "running", "running"
    SUCCEEDED = "succeeded", "succeeded"
    FAILED = "failed", "failed"
    CANCELLED = "cancelled", "cancelled"
    #: In a durable sleep or waiting for an event: no worker holds it until it is woken.
    SUSPENDED = "suspended", "suspended (sleeping or waiting for an event)"


#: States a job never leaves.
FINISHED = (Status.SUCCEEDED, Status.FAILED, Status.CANCELLED)
#: States of a job that may still run.
UNFINISHED = (Status.WAITING, Status.QUEUED, Status.RUNNING, Status.SUSPENDED)


class GroupQuerySet(models.QuerySet["Group"]):
    """Opening a group for a new member."""

    def join(self, group: Group | str) -> Group:
        """The group a new member joins, locked until the caller's transaction ends.

        A ``Group`` must still be open (no member finished); a reference string names the
        newest open group with that reference, or a new one.
        """
        if isinstance(group, Group):
            locked = self.select_for_update().filter(pk=group.pk).first()
            if locked is None:
                raise InvalidOption(f"group {group.pk} does not exist (was it saved?)")
            if locked.jobs.filter(status__in=FINISHED).exists():
                raise GroupClosed(
                    f"group {locked.reference!r} (id {locked.pk}) already has a finished job, so it "
                    "takes no new one; schedule with group=<reference> to start a new generation"
                )
            return locked
        latest = self.select_for_update().filter(reference=group).order_by("-created", "-id").first()
        if latest is not None and not latest.jobs.filter(status__in=FINISHED).exists():
            return latest
        return self.create(reference=group, description=latest.description if latest else "")


class Group(models.Model):
    """Jobs that belong together, with an optional final job that runs after all the others."""

    reference = models.CharField(max_length=255, db_index=True)
    description = models.TextField(blank=True, default="")
    created = models.DateTimeField(default=timezone.now)
    final = models.ForeignKey("Job", null=True, blank=True, on_delete=models.SET_NULL, related_name="ends")

    objects = GroupQuerySet.as_manager()

    class Meta:
        ordering = ["-created", "-id"]

    def __str__(self) -> str:
        return self.reference

    def on_completion(self, job: Job) -> None:
        """Make ``job`` (a member of this group) run only once every other member has finished.

        Call it in the transaction that schedules ``job``, so that no worker takes the job
        before it is marked.
        """
        alias = job._state.db or self._state.db or "default"
        if job.group_id != self.pk:
            raise InvalidOption(
                f"job {job.pk} is not a member of group {self.reference!r}; schedule it with "
                "group=<the group> first"
            )
        if Dependency.objects.using(alias).filter(job=job).exists():
            raise InvalidOption(
                f"job {job.pk} runs after other jobs (after=), so it cannot be a group's final job too"
            )
        now = timezone.now()
        with transaction.atomic(using=alias):
            if not run(lambda dialect: operations.make_final(dialect, self.pk, job.pk, now), alias):
                raise InvalidOption(f"job {job.pk} has already started, so it cannot be a final job")
        self.final = job
        job.refresh_from_db(using=alias, fields=["status"])


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
    #: When the current (or last) attempt started.
    started = models.DateTimeField(null=True, blank=True)
    #: When the job reached its final status: succeeded, failed or cancelled.
    finished = models.DateTimeField(null=True, blank=True)

    #: Attempts started so far. Each claim adds one: it is the fencing token (DESIGN promise 4).
    attempts = models.PositiveIntegerField(default=0)
    #: Attempts that do not count against ``max_attempts``: a worker lost while the job shared
    #: it with others, an attempt interrupted by a clean shutdown.
    excused = models.PositiveIntegerField(default=0)
    max_attempts = models.PositiveIntegerField(default=5)
    timeout = models.FloatField(null=True, blank=True)
    #: Its last attempt was lost with a worker it shared: run it alone, so that a second loss
    #: is charged to it and not to the jobs beside it.
    isolated = models.BooleanField(default=False)
    #: The lease: who holds the job and until when.
    locked_by = models.CharField(max_length=255, blank=True, default="")
    locked_until = models.DateTimeField(null=True, blank=True)

    group = models.ForeignKey(
        Group, null=True, blank=True, on_delete=models.SET_NULL, related_name="jobs", db_index=False
    )
    #: A unique job's key (a hash), held while the job is in one of ``unique_states``; each write
    #: that moves the job out of them clears it. A unique index makes the key one job's at a time.
    unique_key = models.CharField(max_length=64, null=True, blank=True)  # noqa: DJ001 - NULL: no key
    #: The states in which a unique job holds its key, comma-separated ("queued,waiting"). The
    #: database has the default too, for rows written without it (a release before this one).
    unique_states = models.CharField(max_length=64, blank=True, default="", db_default="")

    #: Someone waits for the job's end (``result()``): when it finishes, a trigger sends a
    #: NOTIFY in the same transaction (PostgreSQL). Jobs nobody waits for send none.
    awaited = models.BooleanField(default=False, db_default=False)

    #: Some job runs after this one (``schedule(..., after=[this])``): whatever finishes it
    #: settles those jobs in the same transaction (queues them, or cancels them).
    has_dependents = models.BooleanField(default=False, db_default=False)

    #: Jobs with the same limit key share its limits across every worker: at most
    #: ``concurrency_limit`` running at once, at most ``rate_count`` starts per ``rate_period``
    #: seconds. Workers claim them apart from the others, holding the key while they count.
    limit_key = models.CharField(max_length=255, null=True, blank=True)  # noqa: DJ001 - NULL: no limits
    concurrency_limit = models.PositiveIntegerField(null=True, blank=True)
    rate_count = models.PositiveIntegerField(null=True, blank=True)
    rate_period = models.FloatField(null=True, blank=True)

    #: Set on the job ``schedule()`` returns: True when it is an existing job that a unique
    #: call found (and, with ``on_conflict="replace"``, updated) instead of a new one.
    unique_conflict = False

    class Meta:
        indexes = [
            models.Index(
                fields=["queue", "-priority", "run_after", "id"],
                name="aio_async_job_claim",
                condition=Q(status="queued", limit_key__isnull=True),
            ),
            # Jobs with limits are claimed by a query of their own, through these three.
            models.Index(
                fields=["queue", "-priority", "run_after", "id"],
                name="aio_async_job_limited",
                condition=Q(status="queued", limit_key__isnull=False),
            ),
            models.Index(
                fields=["limit_key"],
                name="aio_async_job_limit_running",
                condition=Q(status="running", limit_key__isnull=False),
            ),
            models.Index(
                fields=["limit_key", "started"],
                name="aio_async_job_limit_started",
                condition=Q(rate_count__isnull=False),
            ),
            # The rescue's scan for leases run out. Its condition names ``locked_until`` too, so
            # that a write to one running job (``FENCE``: by id, status and worker) can never be
            # planned through it: under a long transaction elsewhere, this index holds an entry
            # for every job that ever ran, and the primary key finds the row in a few buffers.
            models.Index(
                fields=["locked_until"],
                name="aio_async_job_lease",
                condition=Q(status="running", locked_until__isnull=False),
            ),
            # A running job without a lease (a row written by hand): the rescue finds it here.
            models.Index(
                fields=["id"],
                name="aio_async_job_unleased",
                condition=Q(status="running", locked_until__isnull=True),
            ),
            # Every claim and completion rewrites the row, and each index without a condition
            # gets a new entry each time; so the rest are partial, holding only the rows asked for.
            models.Index(
                fields=["identity"],
                name="aio_async_job_pending",
                condition=Q(status__in=["queued", "waiting"]),
            ),
            models.Index(fields=["group"], name="aio_async_job_group", condition=Q(group__isnull=False)),
            models.Index(fields=["id"], name="aio_async_job_waiting", condition=Q(status="waiting")),
            models.Index(
                fields=["finished"], name="aio_async_job_succeeded", condition=Q(status="succeeded")
            ),
            # The jobs that failed for good lately (``stats()``): a failure adds one entry, a
            # success none.
            models.Index(fields=["finished"], name="aio_async_job_failed", condition=Q(status="failed")),
            # Suspended jobs by when they wake (a sleep's end, a wait's timeout): the workers'
            # wake-up pass reads the head of it, and no claim ever reads it.
            models.Index(
                fields=["run_after"], name="aio_async_job_suspended", condition=Q(status="suspended")
            ),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["unique_key"], name="aio_async_job_unique", condition=Q(unique_key__isnull=False)
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

    @property
    def charged(self) -> int:
        """Attempts that count against ``max_attempts``."""
        return self.attempts - self.excused

    def attempt_history(self, *, using: str | None = None) -> list[AttemptRecord]:
        """Every attempt of the job, oldest first: the earlier ones' records, then the last one.

        An attempt that ended without finishing the job (retried, lost, timed out, snoozed,
        released) has its ``AttemptRecord`` row; the last attempt is read from the job's own row
        (``started``, ``finished``, ``locked_by``, ``status``), returned as an unsaved record.
        """
        alias = using or self._state.db or "default"
        history = list(AttemptRecord.objects.using(alias).filter(job_id=self.pk).order_by("number", "id"))
        errors = {
            attempt: (exception, message)
            for attempt, exception, message in Error.objects.using(alias)
            .filter(job_id=self.pk)
            .order_by("-id")
            .values_list("attempt", "exception", "message")
        }
        for record in history:
            if record.outcome == AttemptEnd.FAILED and record.number in errors:
                record.outcome = attempt_end(*errors[record.number], gave_up=True)
        last = self._last_attempt(errors)
        if last is not None and all(record.number != last.number for record in history):
            history.append(last)
        return history

    def _last_attempt(self, errors: dict[int, tuple[str, str]]) -> AttemptRecord | None:
        """The attempt the job's row holds: running, or the one that finished the job."""
        if self.attempts == 0 or not self.locked_by or self.status not in (Status.RUNNING, *FINISHED):
            return None
        if self.status == Status.RUNNING:
            outcome = AttemptEnd.RUNNING
        elif self.status in (Status.SUCCEEDED, Status.CANCELLED):
            outcome = AttemptEnd(str(self.status))
        else:
            outcome = attempt_end(*errors.get(self.attempts, (None, "")), gave_up=True)
        return AttemptRecord(
            job=self,
            number=self.attempts,
            due=self.run_after,
            started=self.started,
            ended=None if self.status == Status.RUNNING else self.finished,
            worker=self.locked_by,
            outcome=outcome,
        )


def forget_or_orphan(
    collector: Collector, field: models.Field[Any, Any], sub_objs: models.QuerySet[Any], using: str
) -> None:
    """On a prerequisite's deletion: forget the dependency if it had succeeded, else keep it without one.

    A dependency left without its prerequisite (``after`` NULL) cancels the job waiting on it at
    the next rescue pass: the job it was to run after was deleted before it succeeded.
    """
    models.CASCADE(collector, field, sub_objs.filter(after__status=Status.SUCCEEDED), using)
    models.SET_NULL(collector, field, sub_objs.exclude(after__status=Status.SUCCEEDED), using)


class Dependency(models.Model):
    """``job`` runs only after ``after`` has succeeded; it is cancelled if ``after`` fails or is cancelled.

    ``after`` is NULL once that job was deleted before it succeeded (see ``forget_or_orphan``).
    """

    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="dependencies", db_index=False)
    after = models.ForeignKey(Job, null=True, on_delete=forget_or_orphan, related_name="dependents")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["job", "after"], name="aio_async_dependency_unique")]

    def __str__(self) -> str:
        after = "a deleted job" if self.after_id is None else f"job {self.after_id}"
        return f"job {self.job_id} after {after}"


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


class AttemptRecord(models.Model):
    """An attempt that ended without finishing its job: retried, lost, timed out, snoozed, released.

    Written in the transaction that puts the job back in the queue, from the job's row: the
    row keeps the last attempt only (``started``, ``locked_by``), and the next claim
    overwrites it. An attempt that finishes the job (succeeded, failed for good, cancelled)
    needs no record: the job's row holds it. ``Job.attempt_history()`` reads both.
    """

    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="attempt_records", db_index=False)
    #: The attempt's number (the job's ``attempts`` once it was claimed).
    number = models.PositiveIntegerField()
    #: When the job was due to run (its ``run_after`` when this attempt claimed it).
    due = models.DateTimeField(null=True, blank=True)
    #: When the attempt started; None for attempts that migration 0013 recorded from older Error rows.
    started = models.DateTimeField(null=True, blank=True)
    #: When its end was recorded (for a lost attempt: when it was rescued).
    ended = models.DateTimeField(null=True, blank=True)
    worker = models.CharField(max_length=255, blank=True, default="")
    outcome = models.CharField(max_length=16, choices=[(end.value, end.value) for end in AttemptEnd])

    class Meta:
        db_table = "aio_async_attempt"
        ordering = ["job", "number", "id"]
        indexes = [
            models.Index(fields=["job", "number"], name="aio_async_attempt_job"),
            # Attempts that ended lately, by queue (``stats()``).
            models.Index(fields=["ended"], name="aio_async_attempt_ended"),
        ]

    def __str__(self) -> str:
        return f"job {self.job_id} attempt {self.number}: {self.outcome}"

    @property
    def pickup_latency(self) -> float | None:
        """Seconds from when the job was due to when this attempt started, or None if unknown."""
        if self.due is None or self.started is None:
            return None
        return (self.started - self.due).total_seconds()


class StepKind(models.TextChoices):
    """What a checkpoint of a job's journal records."""

    STEP = "step", "step"
    SLEEP = "sleep", "durable sleep"
    EVENT = "event", "wait for an event"


class StepStatus(models.TextChoices):
    """Where one step of a job stands."""

    SUCCEEDED = "succeeded", "succeeded"
    FAILED = "failed", "failed (runs again)"
    SLEEPING = "sleeping", "sleeping"
    WAITING = "waiting", "waiting for its event"
    TIMED_OUT = "timed_out", "timed out"


class Step(models.Model):
    """One checkpoint of a job's journal: a step (``aio_async.step``), a durable sleep or a wait.

    Written under the job's fence in the transaction that commits the step's own writes, so
    that a step that committed is never run again: a later attempt reads its ``result``. One
    row per job and name. Deleted with its job.
    """

    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="steps", db_index=False)
    name = models.CharField(max_length=255)
    #: Its place in the job: 0 for the first checkpoint recorded, and so on.
    position = models.PositiveIntegerField()
    kind = models.CharField(max_length=8, choices=StepKind.choices)
    status = models.CharField(max_length=16, choices=StepStatus.choices)
    #: What the step returned (JSON), or the event's payload.
    result = models.JSONField(null=True, blank=True)
    #: Why a failed step failed: the exception's type and message (the job's Error row has the traceback).
    error = models.TextField(blank=True, default="")
    #: The job's attempt that wrote it, and that attempt's worker.
    attempt = models.PositiveIntegerField()
    worker = models.CharField(max_length=255, blank=True, default="")
    started = models.DateTimeField(null=True, blank=True)
    ended = models.DateTimeField(null=True, blank=True)
    #: A sleep's end; a wait's timeout (None: it waits for its event for ever).
    until = models.DateTimeField(null=True, blank=True)
    #: The event a wait is for (``notify_event(key, ...)``).
    key = models.CharField(max_length=255, null=True, blank=True)  # noqa: DJ001 - NULL: not a wait
    #: The id of the event a wait received (a plain column: events are pruned on their own).
    event_id = models.BigIntegerField(null=True, blank=True)

    class Meta:
        db_table = "aio_async_step"
        ordering = ["job", "position", "id"]
        constraints = [models.UniqueConstraint(fields=["job", "name"], name="aio_async_step_unique")]
        indexes = [
            # The waits for each event key: ``notify_event()`` wakes their jobs.
            models.Index(fields=["key"], name="aio_async_step_waiting", condition=Q(status="waiting")),
        ]

    def __str__(self) -> str:
        return f"job {self.job_id} {self.kind} {self.name!r}: {self.status}"

    @property
    def duration(self) -> float | None:
        """Seconds from its start to its end, or None while it has not ended."""
        if self.started is None or self.ended is None:
            return None
        return (self.ended - self.started).total_seconds()


class Event(models.Model):
    """An event sent with ``notify_event(key, payload)``: it wakes the jobs waiting for ``key``.

    Kept, so that a job reaching its wait after the event was sent still receives it: a wait
    receives the first event with its key sent since its job was scheduled that an earlier wait
    of the same job did not receive. Pruned with the finished jobs (``RETENTION``).
    """

    key = models.CharField(max_length=255)
    payload = models.JSONField(null=True, blank=True)
    sent = models.DateTimeField(default=timezone.now)

    class Meta:
        db_table = "aio_async_event"
        ordering = ["-sent", "-id"]
        indexes = [
            models.Index(fields=["key", "id"], name="aio_async_event_key"),
            models.Index(fields=["sent"], name="aio_async_event_sent"),
        ]

    def __str__(self) -> str:
        return f"event {self.key!r} at {self.sent:%Y-%m-%d %H:%M:%S}"


class Tick(models.Model):
    """One tick of a periodic schedule. Its unique (schedule, tick) makes one job per tick.

    ``tick`` is the tick's key: the local wall-clock time for a schedule at fixed hours and
    minutes (so that the hour repeated when clocks go back does not run it twice), the UTC
    time otherwise. ``job_id`` is the job it made: none when the tick was skipped (its
    schedule does not overlap and the previous run had not finished), or once the job was
    pruned; it is a plain column, so that pruning jobs never has to touch ticks.
    """

    schedule = models.CharField(max_length=255)
    tick = models.CharField(max_length=64)
    at = models.DateTimeField()
    job_id = models.BigIntegerField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["schedule", "tick"], name="aio_async_tick_unique")]
        indexes = [models.Index(fields=["schedule", "-at"], name="aio_async_tick_latest")]

    def __str__(self) -> str:
        return f"{self.schedule} @ {self.tick}"


class Queue(models.Model):
    """A queue's state that every worker follows: paused (its jobs stay queued) or not.

    A queue has a row once it was paused or resumed; a queue without one runs.
    """

    name = models.CharField(max_length=255, primary_key=True)
    paused = models.BooleanField(default=False)
    #: When it was last paused or resumed, and by whom.
    changed = models.DateTimeField(default=timezone.now)
    changed_by = models.CharField(max_length=255, blank=True, default="")

    def __str__(self) -> str:
        return f"{self.name} (paused)" if self.paused else self.name


class Worker(models.Model):
    """A worker process, as it records itself: at start, with each lease renewal, and at its stop."""

    id = models.CharField(max_length=255, primary_key=True)
    host = models.CharField(max_length=255)
    pid = models.PositiveIntegerField()
    #: The queues it serves, comma-separated ("*": every queue).
    queues = models.TextField()
    concurrency = models.PositiveIntegerField()
    started = models.DateTimeField()
    #: Its last sign of life; a worker whose last one is older than a few renewals is lost.
    heartbeat = models.DateTimeField()

    class Meta:
        ordering = ["-started", "id"]

    def __str__(self) -> str:
        return self.id

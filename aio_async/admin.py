"""Admin pages for jobs, groups and errors: actions that retry, cancel, copy and delete jobs,
and a queue overview (counts, oldest due job, throughput, groups in progress, a 24-hour chart).
A job's page shows its attempts, its steps (``aio_async.step()``, sleeps and waits) and, for
a suspended job, what it waits for.

Every action writes what it did to the admin log. Viewing needs the view permission; what
changes jobs needs the change permission, deleting the delete permission.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import json
import operator
from collections.abc import Iterable, Iterator
from typing import Any

from django.contrib import admin, messages
from django.contrib.admin.models import CHANGE, LogEntry
from django.contrib.admin.options import IncorrectLookupParameters
from django.core.exceptions import PermissionDenied
from django.db.models import Avg, Count, F, Q, QuerySet
from django.db.models.functions import TruncHour
from django.forms import ModelForm
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from aio_async import queues
from aio_async.api import cancel as cancel_jobs
from aio_async.api import retry, schedule
from aio_async.errors import ScheduleError
from aio_async.models import (
    FINISHED,
    UNFINISHED,
    Dependency,
    Error,
    Group,
    Job,
    Queue,
    Status,
    Step,
    StepKind,
    StepStatus,
)
from aio_async.readmodel import queue_states

#: Jobs changed or logged per statement (SQLite caps a statement's parameters).
BATCH = 500
#: What "retry now" puts back in the queue.
RETRYABLE = (Status.QUEUED, Status.FAILED, Status.CANCELLED)
#: The fields the job page lets one edit; the rest are the worker's, shown read-only.
EDITABLE = ("queue", "priority", "run_after", "max_attempts", "timeout")
#: JSON columns, shown formatted instead of as raw text.
JSON_FIELDS = ("args", "kwargs", "meta", "result")
#: Runtime bookkeeping in ``meta`` that a copy of a job starts without.
RUNTIME_META = ("snoozed",)
#: Groups listed on the overview, oldest first.
GROUP_LIMIT = 50
#: Steps listed on a job's page (a job may loop through thousands), first ones first.
STEP_LIMIT = 500
#: Characters of a step's result or error shown on a job's page; the rest is cut.
STEP_TEXT = 1000


def _traceback(error: Error) -> str:
    return format_html('<pre style="white-space: pre-wrap">{}</pre>', error.traceback)


def _json(value: object) -> str:
    text = json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False)
    return format_html('<pre style="white-space: pre-wrap; margin: 0">{}</pre>', text)


def _duration_text(duration: datetime.timedelta) -> str:
    """A duration for people: "0.42 s", "12 s", "5 min 3 s", "3 h 12 min", "2 d 3 h"."""
    seconds = max(duration.total_seconds(), 0.0)
    if seconds < 10:
        return f"{seconds:.2g} s"
    whole = round(seconds)
    for unit, size, smaller, smaller_size in (
        ("d", 86400, "h", 3600),
        ("h", 3600, "min", 60),
        ("min", 60, "s", 1),
    ):
        if whole >= size:
            return f"{whole // size} {unit} {whole % size // smaller_size} {smaller}"
    return f"{whole} s"


def _when(moment: datetime.datetime | None) -> str:
    return "-" if moment is None else timezone.localtime(moment).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def _waited(seconds: float | None) -> str:
    return "-" if seconds is None else _duration_text(datetime.timedelta(seconds=seconds))


def _cut(text: str) -> str:
    """``text``, cut to ``STEP_TEXT`` characters (saying how long it was)."""
    return text if len(text) <= STEP_TEXT else f"{text[:STEP_TEXT]}… ({len(text)} characters)"


def _step_row(step: Step, job_status: str, now: datetime.datetime) -> tuple[Any, ...]:
    """One step on a job's page: position, name, kind, status, attempt, duration, result or error."""
    status = step.get_status_display()
    duration = step.duration
    if step.kind == StepKind.SLEEP and step.until is not None:
        # The attempt that goes on past a sleep records it as succeeded; until then its row
        # says sleeping, also once its time has come (the job waits for a worker to wake it).
        if step.status == StepStatus.SUCCEEDED:
            status = "slept"
        elif step.until <= now and job_status not in FINISHED:
            status = "waking"
        else:
            status = "sleeping"
        outcome = format_html("until {}", _when(step.until))
    elif step.status == StepStatus.FAILED:
        outcome = format_html(
            '<pre class="step-error" style="white-space: pre-wrap; margin: 0">{}</pre>', _cut(step.error)
        )
    elif step.kind == StepKind.EVENT and step.status != StepStatus.SUCCEEDED:
        timeout = "no timeout" if step.until is None else _when(step.until)
        outcome = format_html("event {} (timeout: {})", step.key, timeout)
    else:
        text = json.dumps(step.result, sort_keys=True, ensure_ascii=False)
        prefix = format_html("event {}: ", step.key) if step.kind == StepKind.EVENT else ""
        outcome = format_html('{}<code class="step-result">{}</code>', prefix, _cut(text))
    if status in ("sleeping", StepStatus.WAITING.label) and job_status in FINISHED:
        status = f"cut short: job {job_status}"
    return (
        step.position,
        step.name,
        step.get_kind_display(),
        status,
        step.attempt,
        _waited(duration),
        outcome,
    )


def _batches(ids: list[int]) -> Iterator[list[int]]:
    for start in range(0, len(ids), BATCH):
        yield ids[start : start + BATCH]


class ErrorInline(admin.TabularInline):  # type: ignore[type-arg]
    """A job's failed attempts, newest first, with readable tracebacks."""

    model = Error
    extra = 0
    can_delete = False
    fields = ("attempt", "created", "worker", "exception", "message", "readable_traceback")
    readonly_fields = fields
    ordering = ("-attempt",)

    @admin.display(description="traceback")
    def readable_traceback(self, error: Error) -> str:
        """The traceback, preformatted."""
        return _traceback(error)

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        """Errors are written by the worker only."""
        return False


#: The job page's read-only lists of the jobs a job runs after and before.
DEPENDENCY_FIELDS = ("runs_after", "runs_before")


def _job_links(jobs: Iterable[Job | None]) -> str:
    """Links to these jobs' pages with their status; ``None`` is a job deleted since."""
    items = [
        "a deleted job"
        if job is None
        else format_html(
            '<a href="{}">job {}</a> ({}, {})',
            reverse("admin:aio_async_job_change", args=[job.pk]),
            job.pk,
            job.name,
            job.status,
        )
        for job in jobs
    ]
    return format_html_join("", "<div>{}</div>", ((item,) for item in items)) if items else "-"


@admin.register(Job)
class JobAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    """Jobs by status, queue and name: retry, cancel, copy or delete them; see the queues."""

    list_display = (
        "id",
        "name",
        "status",
        "queue",
        "priority",
        "attempts",
        "group",
        "added",
        "started",
        "finished",
    )
    list_filter = ("status", "queue", "name")
    list_select_related = ("group",)
    search_fields = ("name", "identity")
    date_hierarchy = "added"
    exclude = JSON_FIELDS
    inlines = (ErrorInline,)
    actions = ("retry_now", "cancel", "reenqueue", "duplicate")

    # The job page.

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> tuple[str, ...]:
        """Everything but the few fields one may edit, and the JSON columns formatted."""
        worker = tuple(
            field.name
            for field in Job._meta.concrete_fields
            if field.name not in (*EDITABLE, *JSON_FIELDS) and not field.primary_key
        )
        return (
            *worker,
            "waits_for",
            "args_json",
            "kwargs_json",
            "meta_json",
            "result_json",
            *DEPENDENCY_FIELDS,
            "attempt_history",
            "step_journal",
        )

    def get_fieldsets(self, request: HttpRequest, obj: Any = None) -> tuple[tuple[str | None, Any], ...]:
        """The job's state first (what a suspended job waits for beside its status), then its
        call, its attempts and steps, and the jobs it runs after or before (if any)."""
        call = ("args_json", "kwargs_json", "meta_json", "result_json")
        order = [field.name for field in Job._meta.concrete_fields]
        apart = (*call, *DEPENDENCY_FIELDS, "attempt_history", "step_journal", "waits_for")
        state = [field for field in self.get_fields(request, obj) if field not in apart]
        state.sort(key=lambda field: order.index(field) if field in order else len(order))
        if obj is not None and obj.status == Status.SUSPENDED and "status" in state:
            state.insert(state.index("status") + 1, "waits_for")
        fieldsets: tuple[tuple[str | None, Any], ...] = (
            (None, {"fields": state}),
            ("Call", {"fields": call}),
        )
        if obj is not None and obj.attempts:
            fieldsets += (("Attempts", {"fields": ("attempt_history",)}),)
        if obj is not None and Step.objects.using(obj._state.db).filter(job=obj).exists():
            fieldsets += (("Steps", {"fields": ("step_journal",)}),)
        if obj is not None and Dependency.objects.filter(Q(job=obj) | Q(after=obj)).exists():
            fieldsets += (("Dependencies", {"fields": DEPENDENCY_FIELDS}),)
        return fieldsets

    @admin.display(description="attempts")
    def attempt_history(self, job: Job) -> str:
        """Every attempt, oldest first: its outcome, worker, when it was due, started and ended."""
        rows = [
            (
                record.number,
                record.outcome,
                record.worker or "-",
                _when(record.due),
                _when(record.started),
                _when(record.ended),
                _waited(record.pickup_latency),
            )
            for record in job.attempt_history()
        ]
        if not rows:
            return "-"
        titles = ("#", "outcome", "worker", "due", "started", "ended", "waited")
        head = format_html_join("", "<th>{}</th>", ((title,) for title in titles))
        body = format_html_join("", "<tr>" + "<td>{}</td>" * len(titles) + "</tr>", rows)
        return format_html('<table class="attempt-history"><tr>{}</tr>{}</table>', head, body)

    @admin.display(description="steps")
    def step_journal(self, job: Job) -> str:
        """The job's steps, sleeps and waits in the order it reached them: kind, status, attempt,
        duration, and the result, the error, or what it waits for."""
        now = timezone.now()
        steps = Step.objects.using(job._state.db).filter(job=job).order_by("position", "id")
        rows = [_step_row(step, job.status, now) for step in steps[:STEP_LIMIT]]
        if not rows:
            return "-"
        titles = ("#", "name", "kind", "status", "attempt", "duration", "result or error")
        head = format_html_join("", "<th>{}</th>", ((title,) for title in titles))
        body = format_html_join("", "<tr>" + "<td>{}</td>" * len(titles) + "</tr>", rows)
        more = ""
        if len(rows) == STEP_LIMIT:
            total = steps.count()
            if total > STEP_LIMIT:
                more = format_html("<p>and {} more steps, not shown.</p>", total - STEP_LIMIT)
        return format_html('<table class="step-journal"><tr>{}</tr>{}</table>{}', head, body, more)

    @admin.display(description="waits for")
    def waits_for(self, job: Job) -> str:
        """What a suspended job waits for: the end of its sleep, or an event (until its timeout)."""
        if job.status != Status.SUSPENDED:
            return "-"
        # The one it suspended at is its last sleep or wait reached (earlier sleeps keep their
        # status when they end).
        point = (
            Step.objects.using(job._state.db)
            .filter(job=job, status__in=(StepStatus.SLEEPING, StepStatus.WAITING))
            .order_by("-position", "-id")
            .first()
        )
        if point is None:
            return f"to run again at {_when(job.run_after)}"
        if point.kind == StepKind.SLEEP:
            return f"sleeping until {_when(point.until)} ({point.name})"
        timeout = "no timeout" if point.until is None else _when(point.until)
        return f"waiting for event {point.key} until {timeout} ({point.name})"

    @admin.display(description="runs after")
    def runs_after(self, job: Job) -> str:
        """The jobs this one runs after (``after=``), linked, with their status."""
        rows = Dependency.objects.filter(job=job).select_related("after").order_by("after_id")
        return _job_links(row.after for row in rows)

    @admin.display(description="runs before")
    def runs_before(self, job: Job) -> str:
        """The jobs that run after this one, linked, with their status."""
        rows = Dependency.objects.filter(after=job).select_related("job").order_by("job_id")
        return _job_links(row.job for row in rows)

    @admin.display(description="args")
    def args_json(self, job: Job) -> str:
        """The positional arguments, as indented JSON."""
        return _json(job.args)

    @admin.display(description="kwargs")
    def kwargs_json(self, job: Job) -> str:
        """The keyword arguments, as indented JSON."""
        return _json(job.kwargs)

    @admin.display(description="meta")
    def meta_json(self, job: Job) -> str:
        """The job's meta, as indented JSON."""
        return _json(job.meta)

    @admin.display(description="result")
    def result_json(self, job: Job) -> str:
        """The returned value, as indented JSON."""
        return _json(job.result)

    def has_add_permission(self, request: HttpRequest) -> bool:
        """Jobs are made by schedule(), which checks the allow-list; copy one with the actions."""
        return False

    def save_model(self, request: HttpRequest, obj: Job, form: ModelForm[Job], change: bool) -> None:
        """Write only the fields that were edited, never the worker's columns read a moment ago."""
        obj.save(update_fields=form.changed_data if change else None)

    # Actions on the selected jobs.

    def _log(self, request: HttpRequest, ids: list[int], message: str) -> None:
        """One admin log entry per job."""
        user = request.user.pk
        assert user is not None  # the admin's pages need a logged-in user
        for batch in _batches(ids):
            jobs = Job.objects.filter(pk__in=batch).only("pk", "name", "args", "kwargs").order_by("pk")
            LogEntry.objects.log_actions(user, jobs, CHANGE, message)

    @admin.action(description="Retry now (queued, failed or cancelled jobs)", permissions=["change"])
    def retry_now(self, request: HttpRequest, queryset: QuerySet[Job]) -> None:
        """Queue the selected jobs to run at once, giving failed ones one more attempt."""
        retried = retry(queryset)
        self._log(request, retried, "Queued to run now.")
        self.message_user(request, f"{len(retried)} job(s) queued to run now.", messages.SUCCESS)

    @admin.action(description="Cancel (running jobs too)", permissions=["change"])
    def cancel(self, request: HttpRequest, queryset: QuerySet[Job]) -> None:
        """Cancel the selected jobs that have not finished; a running job's worker is told to stop it."""
        candidates = list(queryset.filter(status__in=UNFINISHED).order_by().values_list("pk", flat=True))
        count = cancel_jobs(queryset, by=f"{request.user.get_username()} in the admin")
        cancelled = [
            pk
            for batch in _batches(candidates)
            for pk in Job.objects.using(queryset.db)
            .filter(pk__in=batch, status=Status.CANCELLED)
            .values_list("pk", flat=True)
        ]
        self._log(request, cancelled, "Cancelled.")
        self.message_user(request, f"{count} job(s) cancelled.", messages.SUCCESS)

    @admin.action(description="Re-enqueue as new jobs (finished jobs)", permissions=["change"])
    def reenqueue(self, request: HttpRequest, queryset: QuerySet[Job]) -> None:
        """Queue a new job with the same call and options for each selected finished job."""
        unfinished = queryset.exclude(status__in=FINISHED).count()
        self._copy(request, queryset.filter(status__in=FINISHED))
        if unfinished:
            self.message_user(
                request,
                f"{unfinished} selected job(s) have not finished and were left alone; "
                "use “Duplicate” to copy them.",
                messages.WARNING,
            )

    @admin.action(description="Duplicate as new jobs", permissions=["change"])
    def duplicate(self, request: HttpRequest, queryset: QuerySet[Job]) -> None:
        """Queue a new job with the same call and options for each selected job, finished or not."""
        self._copy(request, queryset)

    def _copy(self, request: HttpRequest, jobs: QuerySet[Job]) -> None:
        """Schedule a copy of each job through schedule(), so its checks apply; report and log."""
        copies: list[int] = []
        held: list[int] = []
        refused: list[str] = []
        for job in jobs.order_by("pk"):
            meta = job.meta
            if isinstance(meta, dict):
                meta = {key: value for key, value in meta.items() if key not in RUNTIME_META}
            try:
                copy = schedule(
                    job.name,
                    job.args,
                    job.kwargs,
                    priority=job.priority,
                    meta=meta,
                    queue=job.queue,
                    max_attempts=job.max_attempts,
                    timeout=job.timeout,
                    using=jobs.db,
                )
            except ScheduleError as exc:
                refused.append(f"job {job.pk}: {exc}")
                continue
            if copy.unique_conflict:
                held.append(copy.pk)
                continue
            copies.append(copy.pk)
            self.log_addition(request, copy, f"Queued as a copy of job {job.pk}.")
            self.log_change(request, job, f"Copied as job {copy.pk}.")
        if copies:
            listed = ", ".join(f"#{pk}" for pk in copies[:10]) + (", …" if len(copies) > 10 else "")
            self.message_user(request, f"{len(copies)} new job(s) queued: {listed}.", messages.SUCCESS)
        if held:
            listed = ", ".join(f"#{pk}" for pk in held[:10])
            self.message_user(
                request,
                f"{len(held)} job(s) not copied: the same unique job is already queued ({listed}).",
                messages.WARNING,
            )
        if refused:
            self.message_user(
                request, f"{len(refused)} job(s) not copied: " + "; ".join(refused[:5]), messages.ERROR
            )
        if not (copies or held or refused):
            self.message_user(request, "No job copied.", messages.WARNING)

    # Pages of their own: retry every failed job of a filtered list, and the queue overview.

    def get_urls(self) -> list[URLPattern]:
        """The job pages, plus the overview and the retry-failed page under the job list."""
        name = f"{self.opts.app_label}_{self.opts.model_name}"
        own = [
            path("overview/", self.admin_site.admin_view(self.overview_view), name=f"{name}_overview"),
            path(
                "retry-failed/",
                self.admin_site.admin_view(self.retry_failed_view),
                name=f"{name}_retry_failed",
            ),
        ]
        return [*own, *super().get_urls()]

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> Any:
        """The job list, with links to the overview and to retry its failed jobs."""
        context = {"can_retry_failed": self.has_change_permission(request), **(extra_context or {})}
        return super().changelist_view(request, context)

    def retry_failed_view(self, request: HttpRequest) -> HttpResponse:
        """Retry every failed job that the job list's filters and search (from the query
        string) match, not only one page: GET asks to confirm, POST does it."""
        if not self.has_change_permission(request):
            raise PermissionDenied
        if request.method not in ("GET", "POST"):
            return HttpResponseNotAllowed(["GET", "POST"])
        listing = reverse(f"admin:{self.opts.app_label}_{self.opts.model_name}_changelist")
        try:
            changelist = self.get_changelist_instance(request)
        except IncorrectLookupParameters:
            self.message_user(request, "The list's filters are not valid; nothing retried.", messages.ERROR)
            return HttpResponseRedirect(listing)
        failed = changelist.get_queryset(request).filter(status=Status.FAILED)
        back = listing + changelist.get_query_string()
        if request.method == "POST":
            retried = retry(failed)
            self._log(request, retried, "Queued to run now (retry of the failed jobs in a filtered list).")
            self.message_user(request, f"{len(retried)} failed job(s) queued to run now.", messages.SUCCESS)
            return HttpResponseRedirect(back)
        criteria = [(key, value) for key, value in request.GET.items() if key not in ("o", "p")]
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": "Retry failed jobs",
            "count": failed.count(),
            "criteria": criteria,
            "back": back,
        }
        return TemplateResponse(request, "admin/aio_async/job/retry_failed.html", context)

    def overview_view(self, request: HttpRequest) -> HttpResponse:
        """Each queue's jobs by status, oldest due job and throughput; groups in progress; a chart."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        jobs = self.get_queryset(request)
        now = timezone.now()
        paused = queues.paused(using=jobs.db)
        groups, more_groups = _groups_in_progress(Group.objects.using(jobs.db).all(), jobs, now)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": "Queue overview",
            "now": now,
            "statuses": Status.choices,
            "queues": _queues(jobs, now, paused),
            "show_paused": paused is not None,
            "groups": groups,
            "more_groups": more_groups,
            "chart": _chart(jobs, now),
        }
        return TemplateResponse(request, "admin/aio_async/job/overview.html", context)


# The overview's figures: a fixed number of aggregate queries, however many queues and groups.


@dataclasses.dataclass
class QueueRow:
    """One queue on the overview."""

    name: str
    counts: list[tuple[str, int]] = dataclasses.field(default_factory=list)
    due: int = 0
    oldest: dict[str, Any] | None = None
    succeeded_hour: int = 0
    failed_hour: int = 0
    succeeded_day: int = 0
    failed_day: int = 0
    #: None where this version cannot pause queues (no ``aio_async.queues.paused()``).
    paused: bool | None = None


def _queues(jobs: QuerySet[Job], now: datetime.datetime, paused: set[str] | None) -> list[QueueRow]:
    """Per queue: jobs by status, the due ones and the oldest of them, and the last hour and day."""
    states = queue_states(using=jobs.db, now=now, with_queues=paused is not None, recent=True)
    due = jobs.filter(status=Status.QUEUED, run_after__lte=now)
    oldest: dict[str, dict[str, Any]] = {}
    waiting = {name: state.oldest_due for name, state in states.items() if state.oldest_due is not None}
    if waiting:
        first = functools.reduce(
            operator.or_, (Q(queue=name, run_after=since) for name, since in waiting.items())
        )
        for job in due.filter(first).values("queue", "pk", "name", "run_after").order_by("queue", "pk"):
            oldest.setdefault(job["queue"], {**job, "waiting_text": _duration_text(now - job["run_after"])})
    rows = []
    for name, state in states.items():
        if not state.counts and not state.paused:
            continue  # a queue resumed since, with no job: nothing to show
        row = QueueRow(name, [(status, state.counts.get(status, 0)) for status in Status.values])
        row.due = state.due
        row.oldest = oldest.get(name)
        for field in ("succeeded_hour", "failed_hour", "succeeded_day", "failed_day"):
            setattr(row, field, getattr(state, field))
        row.paused = None if paused is None else state.paused
        rows.append(row)
    return rows


@dataclasses.dataclass(frozen=True)
class GroupRow:
    """One group in progress on the overview."""

    pk: int
    reference: str
    created: datetime.datetime
    total: int
    executed: int
    failed: int
    remaining: int
    #: Mean run time of its finished members; None before one ran.
    average: datetime.timedelta | None
    #: now + remaining × average, as if the rest ran one after another; None when unknown.
    estimated: datetime.datetime | None

    @property
    def percent(self) -> int:
        """Share of the members that have finished, 0 to 100."""
        return round(100 * self.executed / self.total) if self.total else 0

    @property
    def average_text(self) -> str:
        """The mean run time for people, or "unknown"."""
        return "unknown" if self.average is None else _duration_text(self.average)


def _groups_in_progress(
    groups: QuerySet[Group], jobs: QuerySet[Job], now: datetime.datetime
) -> tuple[list[GroupRow], int]:
    """The oldest groups with a member still to run, their progress, and how many more there are."""
    members = jobs.filter(status__in=UNFINISHED, group__isnull=False).values("group_id")
    finished = Q(jobs__status__in=FINISHED)
    in_progress = groups.filter(pk__in=members).order_by("created", "id")
    annotated = in_progress.annotate(
        total=Count("jobs"),
        executed=Count("jobs", filter=finished),
        failed=Count("jobs", filter=Q(jobs__status=Status.FAILED)),
        remaining=Count("jobs", filter=Q(jobs__status__in=UNFINISHED)),
        average=Avg(
            F("jobs__finished") - F("jobs__started"),
            filter=finished & Q(jobs__started__isnull=False, jobs__finished__isnull=False),
        ),
    ).values("pk", "reference", "created", "total", "executed", "failed", "remaining", "average")
    rows = []
    for group in annotated[:GROUP_LIMIT]:
        average = group["average"]
        estimated = now + group["remaining"] * average if average is not None else None
        rows.append(GroupRow(**group, estimated=estimated))
    more = in_progress.count() - len(rows) if len(rows) == GROUP_LIMIT else 0
    return rows, more


@dataclasses.dataclass(frozen=True)
class Bar:
    """One hour of the chart: its counts, and where its two stacked bars are drawn."""

    start: datetime.datetime
    succeeded: int
    failed: int
    x: float
    succeeded_y: float
    succeeded_height: float
    failed_y: float
    failed_height: float
    #: The hour's label under the axis, every sixth hour; "" otherwise.
    label: str


#: The chart's geometry, in SVG user units.
CHART_HOURS, BAR_STEP, BAR_WIDTH, PLOT_HEIGHT, LEFT, TOP = 24, 24, 18, 120, 40, 10


def _chart(jobs: QuerySet[Job], now: datetime.datetime) -> dict[str, Any]:
    """Succeeded and failed jobs per hour over the last 24 hours, laid out as an SVG bar chart."""
    # Hours start on the hour in the current time zone; stepping back in UTC stays on them.
    current = timezone.localtime(now).replace(minute=0, second=0, microsecond=0).astimezone(datetime.UTC)
    starts = [current - datetime.timedelta(hours=back) for back in range(CHART_HOURS - 1, -1, -1)]
    counts: dict[tuple[datetime.datetime, str], int] = {}
    finished = jobs.filter(status__in=(Status.SUCCEEDED, Status.FAILED), finished__gte=starts[0])
    per_hour = finished.annotate(hour=TruncHour("finished")).values("hour", "status").annotate(n=Count("pk"))
    for row in per_hour.order_by():
        counts[row["hour"].astimezone(datetime.UTC), row["status"]] = row["n"]
    totals = [(counts.get((start, "succeeded"), 0), counts.get((start, "failed"), 0)) for start in starts]
    peak = max((ok + bad for ok, bad in totals), default=0) or 1
    bars = []
    for index, (start, (ok, bad)) in enumerate(zip(starts, totals, strict=True)):
        ok_height, bad_height = PLOT_HEIGHT * ok / peak, PLOT_HEIGHT * bad / peak
        local = timezone.localtime(start)
        bars.append(
            Bar(
                start=local,
                succeeded=ok,
                failed=bad,
                x=LEFT + index * BAR_STEP + (BAR_STEP - BAR_WIDTH) / 2,
                succeeded_y=TOP + PLOT_HEIGHT - ok_height,
                succeeded_height=ok_height,
                failed_y=TOP + PLOT_HEIGHT - ok_height - bad_height,
                failed_height=bad_height,
                label=local.strftime("%H:%M") if local.hour % 6 == 0 else "",
            )
        )
    return {
        "bars": bars,
        "peak": peak,
        "succeeded": sum(ok for ok, _ in totals),
        "failed": sum(bad for _, bad in totals),
        "width": LEFT + CHART_HOURS * BAR_STEP + 10,
        "height": TOP + PLOT_HEIGHT + 30,
        "left": LEFT,
        "top": TOP,
        "bottom": TOP + PLOT_HEIGHT,
        "right": LEFT + CHART_HOURS * BAR_STEP,
        "bar_width": BAR_WIDTH,
    }


@admin.register(Queue)
class QueueAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    """Queues that were paused or resumed: pause and resume them; add one to pause it."""

    list_display = ("name", "paused", "changed", "changed_by")
    list_filter = ("paused",)
    fields = ("name",)
    actions = ("pause", "resume")

    def get_readonly_fields(self, request: HttpRequest, obj: Queue | None = None) -> tuple[str, ...]:
        """A queue's name is set once."""
        return ("name", "paused", "changed", "changed_by") if obj is not None else ()

    def get_fields(self, request: HttpRequest, obj: Queue | None = None) -> tuple[str, ...]:
        """The name to pause, or the queue's state."""
        return ("name", "paused", "changed", "changed_by") if obj is not None else ("name",)

    def save_model(self, request: HttpRequest, obj: Queue, form: Any, change: bool) -> None:
        """Adding a queue pauses it (and tells the workers)."""
        queues.pause(obj.name, by=self._by(request), using=obj._state.db or None)

    @staticmethod
    def _by(request: HttpRequest) -> str:
        return f"{request.user.get_username()} in the admin"

    @admin.action(description="Pause the selected queues", permissions=["change"])
    def pause(self, request: HttpRequest, queryset: QuerySet[Queue]) -> None:
        """Pause each selected queue: its jobs stay queued until it is resumed."""
        changed = [row for row in queryset if queues.pause(row.name, by=self._by(request), using=queryset.db)]
        for row in changed:
            self.log_change(request, row, "Paused.")
        self.message_user(request, f"{len(changed)} queue(s) paused.", messages.SUCCESS)

    @admin.action(description="Resume the selected queues", permissions=["change"])
    def resume(self, request: HttpRequest, queryset: QuerySet[Queue]) -> None:
        """Resume each selected queue: workers claim its jobs again."""
        changed = [
            row for row in queryset if queues.resume(row.name, by=self._by(request), using=queryset.db)
        ]
        for row in changed:
            self.log_change(request, row, "Resumed.")
        self.message_user(request, f"{len(changed)} queue(s) resumed.", messages.SUCCESS)


@admin.register(Group)
class GroupAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    """Groups with how many of their jobs have finished."""

    list_display = ("id", "reference", "created", "finished_jobs", "unfinished_jobs", "final")
    search_fields = ("reference",)
    raw_id_fields = ("final",)

    def get_queryset(self, request: HttpRequest) -> QuerySet[Group]:
        """Annotate the finished and unfinished counts in one query."""
        groups: QuerySet[Group] = (
            super()
            .get_queryset(request)
            .annotate(
                finished_count=Count("jobs", filter=Q(jobs__status__in=FINISHED)),
                unfinished_count=Count("jobs", filter=~Q(jobs__status__in=FINISHED)),
            )
        )
        return groups

    @admin.display(description="finished", ordering="finished_count")
    def finished_jobs(self, group: Group) -> int:
        """Members that have finished (succeeded, failed or cancelled)."""
        return int(getattr(group, "finished_count", 0))

    @admin.display(description="unfinished", ordering="unfinished_count")
    def unfinished_jobs(self, group: Group) -> int:
        """Members still to run."""
        return int(getattr(group, "unfinished_count", 0))

    def has_add_permission(self, request: HttpRequest) -> bool:
        """Groups are made by ``schedule(group=...)``, with their jobs: never empty by hand."""
        return False


@admin.register(Error)
class ErrorAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    """Every failed attempt."""

    list_display = ("id", "job", "attempt", "exception", "worker", "created")
    list_filter = ("exception",)
    search_fields = ("message", "job__name")
    raw_id_fields = ("job",)
    readonly_fields = ("job", "attempt", "exception", "message", "readable_traceback", "worker", "created")
    exclude = ("traceback",)

    @admin.display(description="traceback")
    def readable_traceback(self, error: Error) -> str:
        """The traceback, preformatted."""
        return _traceback(error)

    def has_add_permission(self, request: HttpRequest) -> bool:
        """Errors are written by the worker only, one per failed attempt."""
        return False

"""Admin pages for jobs, groups and errors, with retry-now and cancel actions."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import Count, F, Q, QuerySet
from django.db.models.functions import Greatest
from django.http import HttpRequest
from django.utils import timezone
from django.utils.html import format_html

from aio_async.api import cancel_pending
from aio_async.models import FINISHED, Error, Group, Job, Status


def _traceback(error: Error) -> str:
    return format_html('<pre style="white-space: pre-wrap">{}</pre>', error.traceback)


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


@admin.register(Job)
class JobAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    """Jobs by status, queue and name; retry now or cancel."""

    list_display = ("id", "name", "status", "queue", "priority", "attempts", "run_after", "finished")
    list_filter = ("status", "queue", "name")
    search_fields = ("name", "identity")
    date_hierarchy = "added"
    readonly_fields = (
        "identity",
        "added",
        "started",
        "finished",
        "attempts",
        "excused",
        "isolated",
        "locked_by",
        "locked_until",
        "result",
    )
    inlines = (ErrorInline,)
    actions = ("retry_now", "cancel")

    @admin.action(description="Retry now (queued, failed or cancelled jobs)")
    def retry_now(self, request: HttpRequest, queryset: QuerySet[Job]) -> None:
        """Queue the selected jobs to run at once, giving failed ones one more attempt."""
        retried = queryset.filter(status__in=(Status.QUEUED, Status.FAILED, Status.CANCELLED)).update(
            status=Status.QUEUED,
            run_after=timezone.now(),
            finished=None,
            max_attempts=Greatest(F("max_attempts"), F("attempts") - F("excused") + 1),
        )
        self.message_user(request, f"{retried} job(s) queued to run now.", messages.SUCCESS)

    @admin.action(description="Cancel (jobs that have not started)")
    def cancel(self, request: HttpRequest, queryset: QuerySet[Job]) -> None:
        """Cancel the selected jobs that are queued or waiting for their group."""
        cancelled = cancel_pending(queryset)
        self.message_user(request, f"{cancelled} job(s) cancelled.", messages.SUCCESS)


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

"""The README's ASGI example, as a real view: a row and its job, committed together."""

from __future__ import annotations

from asgiref.sync import sync_to_async
from django.db import transaction
from django.http import HttpRequest, JsonResponse

from tests.app import tasks
from tests.app.models import Record


@transaction.atomic
def create_record(key: str) -> Record:
    """Create the row and schedule its job in one transaction: both commit, or neither."""
    record = Record.objects.create(key=key)
    tasks.decorated.schedule([f"job for {key}"])
    if key.startswith("fail"):
        raise ValueError("the view failed after scheduling: nothing may remain")
    return record


async def create(request: HttpRequest) -> JsonResponse:
    """An async view: the atomic part runs in one sync function."""
    record = await sync_to_async(create_record)(request.GET["key"])
    return JsonResponse({"id": record.pk})

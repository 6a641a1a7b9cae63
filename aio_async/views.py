"""HTTP views for operating the queue: the health endpoint (see ``aio_async.urls``)."""

from __future__ import annotations

import hmac

from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from aio_async.conf import get_settings
from aio_async.health import health, problems

__all__ = ["health_view", "may_operate"]


def may_operate(request: HttpRequest) -> bool:
    """A staff user, or a request with ``Authorization: Bearer <AIO_ASYNC["HEALTH"]["TOKEN"]>``."""
    token = get_settings().health.token
    given = request.headers.get("Authorization", "")
    if token is not None and given.startswith("Bearer "):
        return hmac.compare_digest(given.removeprefix("Bearer ").strip().encode(), token.encode())
    user = getattr(request, "user", None)
    return bool(user is not None and user.is_active and user.is_staff)


@never_cache
@require_GET
def health_view(request: HttpRequest) -> JsonResponse:
    """The queue's health as JSON: 200 when healthy, 503 when not; 403 to anyone else."""
    if not may_operate(request):
        return JsonResponse(
            {"error": "staff users only, or Authorization: Bearer <AIO_ASYNC['HEALTH']['TOKEN']>"}, status=403
        )
    report = health()
    found = problems(report)
    report["healthy"] = not found
    report["problems"] = found
    return JsonResponse(report, status=503 if found else 200)

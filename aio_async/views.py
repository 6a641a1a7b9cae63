"""HTTP views for operating the queue: the health endpoint (see ``aio_async.urls``), and what
``metrics/`` answers without ``prometheus_client``."""

from __future__ import annotations

import hmac

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from aio_async.conf import get_settings
from aio_async.health_report import health, problems

__all__ = ["FORBIDDEN", "health_view", "may_operate", "metrics_unavailable_view"]

#: What anyone else is told.
FORBIDDEN = "staff users only, or Authorization: Bearer <AIO_ASYNC['HEALTH']['TOKEN']>"


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
        return JsonResponse({"error": FORBIDDEN}, status=403)
    report = health()
    found = problems(report)
    report["healthy"] = not found
    report["problems"] = found
    return JsonResponse(report, status=503 if found else 200)


@never_cache
@require_GET
def metrics_unavailable_view(request: HttpRequest) -> HttpResponse:
    """``metrics/`` without ``prometheus_client``: 501, naming the extra to install; 403 to others."""
    if not may_operate(request):
        return HttpResponse(f"{FORBIDDEN}\n", status=403, content_type="text/plain; charset=utf-8")
    return HttpResponse(
        "aio_async's metrics need prometheus_client: pip install 'aio_async[prometheus]'\n",
        status=501,
        content_type="text/plain; charset=utf-8",
    )

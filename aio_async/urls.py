"""URLs for operating the queue: ``path("queue/", include("aio_async.urls"))``."""

from __future__ import annotations

import importlib.util

from django.urls import path

from aio_async import views

app_name = "aio_async"
urlpatterns = [path("health/", views.health_view, name="health")]

# The metrics page needs prometheus_client: pip install 'aio_async[prometheus]'. Without it,
# the page says so (501).
if importlib.util.find_spec("prometheus_client") is not None:
    from aio_async.metrics import metrics_view

    urlpatterns.append(path("metrics/", metrics_view, name="metrics"))
else:
    urlpatterns.append(path("metrics/", views.metrics_unavailable_view, name="metrics"))

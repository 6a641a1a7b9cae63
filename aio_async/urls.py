"""URLs for operating the queue: ``path("queue/", include("aio_async.urls"))``."""

from __future__ import annotations

from django.urls import path

from aio_async import views

app_name = "aio_async"
urlpatterns = [path("health/", views.health_view, name="health")]

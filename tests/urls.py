"""The admin, for the admin tests, and the README's ASGI example."""

from __future__ import annotations

from django.contrib import admin
from django.urls import include, path

from tests.app import views

urlpatterns = [
    path("admin/", admin.site.urls),
    path("records/", views.create),
    path("queue/", include("aio_async.urls")),
]

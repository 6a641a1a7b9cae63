"""What the documentation's snippets refer to without defining it: tasks, views and rows.

``tests/integration/test_readme.py`` runs the ``python`` blocks of the README and of
``docs/*.md`` with the names of ``__all__`` in their namespace (``aio_async`` and
``timedelta`` among them, as the docs assume them imported); this module is also
``myapp.models`` of the docs' example app. The rows a snippet names without defining
(``user``, ``job``, ``greeting``...) are made only then, by ``made()``.
"""

from __future__ import annotations

import logging
import types
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from asgiref.sync import sync_to_async
from django.contrib.auth.models import User
from django.db import transaction
from django.http import HttpRequest, JsonResponse
from django.test import RequestFactory
from django.urls import include, path

import aio_async
from aio_async.models import Job
from tests.app.models import Greeting, Record

__all__ = [
    "BASE_DIR",
    "Greeting",
    "Record",
    "User",
    "add",
    "agreet",
    "aio_async",
    "call_stripe",
    "count_letters",
    "count_stock",
    "extract_orders",
    "greet",
    "import_row",
    "logger",
    "made",
    "notify_ops",
    "rebuild_index",
    "refresh",
    "send_digest",
    "send_invoice",
    "send_report",
    "sum_totals",
    "timedelta",
    "urlpatterns",
    "write_greeting",
]

#: A settings module's ``BASE_DIR``.
BASE_DIR = Path(__file__).resolve().parent
logger = logging.getLogger("myapp")


@aio_async.task(max_attempts=3)
def write_greeting(greeting_id: int) -> str:
    """Getting started's sync task: fill a Greeting's text."""
    greeting = Greeting.objects.get(pk=greeting_id)
    greeting.text = f"Hello, {greeting.name}!"
    greeting.save()
    return greeting.text


@aio_async.task
async def count_letters(name: str) -> int:
    """Getting started's coroutine task."""
    return len(name)


def greet(request: HttpRequest, name: str) -> JsonResponse:
    """Getting started's sync view: a row and its job, committed together."""
    with transaction.atomic():
        greeting = Greeting.objects.create(name=name)
        job = write_greeting.schedule([greeting.pk])
    return JsonResponse({"greeting": greeting.pk, "job": job.pk})


@transaction.atomic
def create_greeting(name: str) -> tuple[Greeting, Job]:
    """The atomic part of the async view."""
    greeting = Greeting.objects.create(name=name)
    return greeting, write_greeting.schedule([greeting.pk])


async def agreet(request: HttpRequest, name: str) -> JsonResponse:
    """Getting started's async view."""
    greeting, job = await sync_to_async(create_greeting)(name)
    letters = await count_letters.aschedule([name])
    return JsonResponse({"greeting": greeting.pk, "job": job.pk, "letters": letters.pk})


urlpatterns = [
    path("greet/<str:name>/", greet),
    path("agreet/<str:name>/", agreet),
    path("queue/", include("aio_async.urls")),
]


@aio_async.task
def extract_orders(day: str) -> str:
    """A step of the after= diamond."""
    return day


@aio_async.task
def sum_totals(day: str) -> str:
    """A step of the after= diamond."""
    return day


@aio_async.task
def count_stock(day: str) -> str:
    """A step of the after= diamond."""
    return day


@aio_async.task
def send_report(day: int | str) -> None:
    """The diamond's last step, or a group's final job."""


@aio_async.task
def import_row(row_id: int) -> None:
    """A member of a group."""


@aio_async.task
def call_stripe(invoice_id: int) -> None:
    """A rate-limited call."""


@aio_async.task
def send_invoice(order_id: int) -> int:
    """A job whose result someone waits for."""
    return 100 * order_id


@aio_async.task
def rebuild_index(shop_id: int) -> None:
    """A unique job."""


@aio_async.task
def send_digest(user_id: int) -> None:
    """A job unique for a period."""


@aio_async.task
def refresh(feed_id: int) -> None:
    """A debounced job."""


def notify_ops(message: str) -> None:
    """Page someone (here: log it)."""
    logger.warning(message)


def _request() -> HttpRequest:
    request = RequestFactory().get("/")
    request.user = User(username="admin")
    return request


#: The rows and objects a snippet may name, made when it names them.
_MADE: dict[str, Callable[[], Any]] = {
    "user": lambda: User.objects.create(username="grace"),
    "greeting": lambda: Greeting.objects.create(name="Ada"),
    "job": lambda: write_greeting.schedule([Greeting.objects.create(name="Bob").pk]),
    "request": _request,
    "day": lambda: "2026-12-01",
    "rows": lambda: [1, 2, 3],
    "order": lambda: types.SimpleNamespace(pk=7),
    "invoice": lambda: types.SimpleNamespace(pk=8),
    "feed": lambda: types.SimpleNamespace(pk=9),
    "api": lambda: types.SimpleNamespace(quota_left=lambda: True),
}


def made(names: set[str]) -> dict[str, Any]:
    """The objects among ``names`` that a snippet uses without defining, made now."""
    return {name: make() for name, make in _MADE.items() if name in names}


def add(a: int, b: int) -> int:
    """The sum (the job of the testing page's test without a database)."""
    return a + b

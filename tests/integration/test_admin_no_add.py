"""The admin offers no form to add what only the queue writes: errors and groups."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

pytestmark = pytest.mark.django_db


@pytest.fixture
def client() -> Client:
    user = User.objects.create_superuser("root", "root@example.com", "secret")
    client = Client()
    client.force_login(user)
    return client


@pytest.mark.parametrize("model", ["error", "group"])
def test_no_add_form_nor_add_link(client: Client, model: str) -> None:
    add = reverse(f"admin:aio_async_{model}_add")
    assert client.get(add).status_code == 403
    listing = client.get(reverse(f"admin:aio_async_{model}_changelist"))
    assert listing.status_code == 200
    assert add not in listing.content.decode()
    index = client.get(reverse("admin:index")).content.decode()
    assert add not in index

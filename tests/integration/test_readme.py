"""The README's API table says what the code returns."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from aio_async import health, schedule
from tests.app import tasks

README = Path(__file__).resolve().parents[2] / "README.md"


def _api_row(name: str) -> str:
    """The text of the README's API table row whose first cell starts with ``name``."""
    [row] = [line for line in README.read_text().splitlines() if line.startswith(f"| `{name}")]
    return row


@pytest.mark.django_db
def test_the_health_row_names_every_key_health_returns() -> None:
    schedule(tasks.add, [1, 2])
    report = health()
    row = _api_row("health(")
    named = set(re.findall(r"`(\w+)`", row))
    assert set(report) - named == set()
    by_name = row[row.index("`by_name`") :]
    assert set(report["by_name"]["tests.app.tasks.add"]) - set(re.findall(r"`(\w+)`", by_name)) == set()

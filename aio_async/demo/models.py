"""What the demo's jobs write."""

from __future__ import annotations

from django.db import models


class Note(models.Model):
    """A row written by a demo job."""

    text = models.CharField(max_length=200)

    def __str__(self) -> str:
        return self.text

"""Rows that the test jobs write."""

from __future__ import annotations

from django.db import models


class Record(models.Model):
    """Written by a job; ``key`` says which."""

    key = models.CharField(max_length=100)
    value = models.IntegerField(default=0)
    created = models.DateTimeField(auto_now_add=True)


class Greeting(models.Model):
    """The getting-started page's model (``myapp.models.Greeting`` in the docs' snippets)."""

    name = models.CharField(max_length=100)
    text = models.TextField(blank=True)

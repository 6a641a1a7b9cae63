"""The databases aio_async speaks: one small module each, their differences as data.

A ``Dialect`` holds the SQL fragments that differ and the capability flags that decide which
statements an operation runs (``notifies``: NOTIFY is sent; ``advisory_locks``: limit keys
are locked). ``for_vendor`` picks one by ``connection.vendor``.
"""

from __future__ import annotations

from aio_async.store.dialects.base import Dialect
from aio_async.store.dialects.postgresql import POSTGRESQL
from aio_async.store.dialects.sqlite import SQLITE

__all__ = ["POSTGRESQL", "SQLITE", "Dialect", "for_vendor"]


def for_vendor(vendor: str) -> Dialect:
    """The dialect of ``connection.vendor``; ValueError for a database aio_async does not support."""
    if vendor == "postgresql":
        return POSTGRESQL
    if vendor == "sqlite":
        return SQLITE
    raise ValueError(f"aio_async supports PostgreSQL and SQLite, not {vendor}")

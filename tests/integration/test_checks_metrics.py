"""E003: METRICS_PORT without prometheus_client fails ``manage.py check``, not only ``run``."""

from __future__ import annotations

import sys

import pytest
from django.core import checks
from django.test import override_settings

from tests.settings import AIO_ASYNC


def e003() -> list[checks.CheckMessage]:
    found = checks.run_checks(tags=[checks.Tags.compatibility])
    return [message for message in found if message.id == "aio_async.E003"]


def test_metrics_port_without_prometheus_client_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "prometheus_client", None)  # what an import finds when absent
    with override_settings(AIO_ASYNC={**AIO_ASYNC, "METRICS_PORT": 9464}):
        [error] = e003()
    assert isinstance(error, checks.Error)
    assert "METRICS_PORT" in error.msg
    assert "prometheus_client is not installed" in error.msg
    assert error.hint is not None
    assert "aio_async[prometheus]" in error.hint
    with override_settings(AIO_ASYNC=AIO_ASYNC):
        assert e003() == []  # no port, no need


def test_metrics_port_with_prometheus_client_passes() -> None:
    pytest.importorskip("prometheus_client")
    with override_settings(AIO_ASYNC={**AIO_ASYNC, "METRICS_PORT": 9464}):
        assert e003() == []

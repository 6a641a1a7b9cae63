"""METRICS_PORT: each worker process serves its own Prometheus metrics."""

from __future__ import annotations

import socket
import urllib.request

import pytest
from django.db import connection

pytest.importorskip("prometheus_client")

from prometheus_client.parser import text_string_to_metric_families

from aio_async import schedule_many
from aio_async.models import Job
from tests.acceptance.workers import Worker, environment, wait_until
from tests.app import tasks

pytestmark = pytest.mark.django_db(transaction=True)


def free_ports(count: int) -> int:
    """The first of ``count`` consecutive ports that are free now."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            first: int = probe.getsockname()[1]
        if first + count > 65535:
            continue
        try:
            for port in range(first, first + count):
                with socket.socket() as other:
                    other.bind(("127.0.0.1", port))
        except OSError:
            continue
        return first
    raise AssertionError("no free ports")


def succeeded(port: int) -> float:
    """The worker's count of succeeded attempts in queue default, scraped."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as page:
        text = page.read().decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "aio_async_jobs_total" and sample.labels == {
                "queue": "default",
                "outcome": "succeeded",
            }:
                return sample.value
    return 0.0


def test_each_supervised_worker_serves_its_metrics_on_its_own_port() -> None:
    port = free_ports(2)
    env = environment(str(connection.settings_dict["NAME"]), {"METRICS_PORT": port, "POLL_INTERVAL": 0.1})
    with Worker(env, "--processes", "2") as supervisor:
        wait_until(lambda: supervisor.output.count("Serving metrics on port") == 2, 60, "metrics served")
        schedule_many(tasks.add, [([n, n], {}) for n in range(20)])
        wait_until(lambda: Job.objects.filter(status="succeeded").count() == 20, 60, "every job done")
        wait_until(lambda: succeeded(port) + succeeded(port + 1) == 20, 10, "every success counted")
        assert supervisor.stop() == 0, supervisor.output

"""A worker's start-up warning about registered tasks on queues it does not serve."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator

import pytest

from aio_async import allow
from aio_async.conf import QueueSettings
from aio_async.payload import TaskOptions
from aio_async.startup import unserved_queues, warn_unserved_queues


def _noop() -> None:
    """A task body."""


@pytest.fixture
def mail_task() -> Iterator[str]:
    """A task registered on the ``mail`` queue, as in the README, removed afterwards."""
    name = "tests.unit.test_cli_startup.send_welcome"
    allow.register(name, _noop, TaskOptions(queue="mail"))
    yield name
    allow._registry.pop(name, None)


def settings(*queues: str) -> QueueSettings:
    return dataclasses.replace(QueueSettings(), queues=queues)


def test_tasks_on_queues_a_worker_does_not_serve_are_named_by_queue(mail_task: str) -> None:
    unserved = unserved_queues(settings("default"))
    assert unserved["mail"] == [mail_task]
    assert "default" not in unserved  # @task without a queue is on "default"
    assert "tests.app.tasks.adecorated" not in str(unserved)
    assert unserved["tasks"] == ["tests.app.tasks.decorated"]  # @task(queue="tasks")
    # Other tests may register tasks of their own: only these two queues are looked at.
    assert "tasks" not in unserved_queues(settings("default", "tasks"))
    assert unserved_queues(settings("default", "tasks"))["mail"] == [mail_task]
    assert "mail" not in unserved_queues(settings("default", "tasks", "mail"))
    assert unserved_queues(settings("*")) == {}
    assert unserved_queues(settings("other", "*")) == {}


def test_the_warning_is_one_record_with_its_action(mail_task: str, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="aio_async.executor"):
        warn_unserved_queues(settings("default"))
        warn_unserved_queues(settings("*"))
    records = [record for record in caplog.records if getattr(record, "action", None) == "unserved_queues"]
    assert len(records) == 1
    record = records[0]
    assert (record.name, record.levelno) == ("aio_async.executor", logging.WARNING)
    message = record.getMessage()
    assert mail_task in message
    assert "--queue mail" in message
    assert "--queue '*'" in message
    assert record.queues["mail"] == [mail_task]  # type: ignore[attr-defined]


def test_no_warning_when_every_registered_queue_is_served(caplog: pytest.LogCaptureFixture) -> None:
    queues = {target.options.queue or "default" for target in allow.registered().values()}
    with caplog.at_level(logging.WARNING, logger="aio_async.executor"):
        assert warn_unserved_queues(settings(*sorted(queues))) == {}
    assert not caplog.records

"""What a job past its timeout leaves behind: a message that says so, and true log lines."""

from __future__ import annotations

import logging

import pytest

from aio_async import schedule
from aio_async.models import Error
from aio_async.values import Outcome
from tests.app import tasks
from tests.app.models import Record
from tests.conftest import drain

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_coroutine_job_past_its_timeout_records_how_long_it_had() -> None:
    job = schedule(tasks.asleep, [5], timeout=0.1, max_attempts=1)
    assert drain() == {Outcome.FAILED: 1}
    error = Error.objects.get(job=job)
    assert error.exception == "TimeoutError"
    assert error.message == "the job ran past its timeout of 0.1 s and was cancelled"
    assert "asleep" in error.traceback


def test_a_sync_job_past_its_timeout_logs_no_lost_lease(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="aio_async")
    schedule(tasks.write_after, ["late", 1.0], timeout=0.2, max_attempts=1)
    assert drain() == {Outcome.FAILED: 1}
    assert not Record.objects.filter(key="late").exists()
    actions = [getattr(record, "action", None) for record in caplog.records]
    assert "lease_lost" not in actions
    assert not [record for record in caplog.records if "lease_lost" in record.getMessage()]
    late = [record for record in caplog.records if getattr(record, "action", None) == "job_finished_late"]
    assert len(late) == 1
    assert "nothing it wrote was committed (the job had been failed at its timeout)" in late[0].getMessage()

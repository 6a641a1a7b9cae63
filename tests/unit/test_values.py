"""Value types at the ground: a worker's id, how an attempt ended."""

from __future__ import annotations

import os
import socket

import pytest

from aio_async import WorkerId, WorkerLost
from aio_async.executor import new_worker_id
from aio_async.values import TIMED_OUT, AttemptEnd, attempt_end, class_path


def test_a_new_worker_id_reads_back_as_this_host_and_process() -> None:
    parsed = WorkerId.parse(new_worker_id())
    assert (parsed.host, parsed.pid) == (socket.gethostname(), os.getpid())
    assert len(parsed.token) == 6
    assert str(parsed) == f"{parsed.host}:{parsed.pid}:{parsed.token}"


def test_two_new_worker_ids_differ_by_their_token() -> None:
    assert len({WorkerId.new().token for _ in range(20)}) > 1


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("web-1:4242:a1b2c3", WorkerId("web-1", 4242, "a1b2c3")),
        ("fe80::1:7:ff", WorkerId("fe80::1", 7, "ff")),  # a host with colons keeps them
    ],
)
def test_parse_reads_host_pid_and_token(text: str, expected: WorkerId) -> None:
    assert WorkerId.parse(text) == expected
    assert str(WorkerId.parse(text)) == text


@pytest.mark.parametrize(
    "text", ["", "web-1", "web-1:42", "web-1:pid:abc", ":42:abc", "web-1:42:XYZ", "w:1:a "]
)
def test_parse_refuses_anything_else_and_says_what_it_expects(text: str) -> None:
    with pytest.raises(ValueError, match="is not a worker id: expected host:pid:token"):
        WorkerId.parse(text)


@pytest.mark.parametrize(
    ("exception", "message", "gave_up", "expected"),
    [
        (None, "", False, AttemptEnd.RELEASED),
        ("ValueError", "boom", False, AttemptEnd.RETRIED),
        ("ValueError", "boom", True, AttemptEnd.FAILED),
        (class_path(WorkerLost), "worker w stopped renewing its lease", False, AttemptEnd.LOST),
        (class_path(WorkerLost), "worker w stopped renewing its lease", True, AttemptEnd.LOST),
        ("TimeoutError", f"{TIMED_OUT} of 1 s and was cancelled", True, AttemptEnd.TIMED_OUT),
        ("TimeoutError", "the job's own timeout", False, AttemptEnd.RETRIED),
    ],
)
def test_attempt_end_reads_an_attempt_from_its_error(
    exception: str | None, message: str, gave_up: bool, expected: AttemptEnd
) -> None:
    assert attempt_end(exception, message, gave_up=gave_up) is expected

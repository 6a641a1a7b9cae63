"""Queue names are checked everywhere, ``queues pause`` refuses a queue nothing names, and
``--help`` lists every verb in plain text."""

from __future__ import annotations

import json

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

from aio_async import schedule
from aio_async.conf import get_settings
from aio_async.errors import InvalidOption
from aio_async.models import Job, Queue
from tests.acceptance.test_cli import run
from tests.app import tasks
from tests.settings import AIO_ASYNC

CLI = ("-m", "aio_async", "--settings", "tests.settings")
VERBS = ("run", "flush", "health", "periodic", "queues", "workers", "prune", "demo")


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("name", ["Reports ", " mail", "two words", "a/b", "tab\there"])
def test_schedule_refuses_a_queue_name_with_spaces_or_odd_characters(name: str) -> None:
    with pytest.raises(InvalidOption, match="queue must be letters, digits"):
        schedule(tasks.add, [1, 2], queue=name)
    assert not Job.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_schedule_takes_letters_digits_and_the_separators() -> None:
    job = schedule(tasks.add, [1, 2], queue="reports.eu-1:night_2")
    assert job.queue == "reports.eu-1:night_2"


def test_the_queues_setting_and_option_refuse_a_bad_name() -> None:
    with (
        override_settings(AIO_ASYNC={**AIO_ASYNC, "QUEUES": ["default", "mail "]}),
        pytest.raises(ImproperlyConfigured, match=r"AIO_ASYNC\['QUEUES'\]: queue must be letters"),
    ):
        get_settings()
    with override_settings(AIO_ASYNC={**AIO_ASYNC, "QUEUES": ["*"]}):
        assert get_settings().queues == ("*",)


@pytest.mark.django_db(transaction=True)
def test_the_cli_refuses_a_bad_queue_name() -> None:
    for arguments in (
        ("queues", "pause", "mail "),
        ("queues", "resume", "Reports "),
        ("flush", "--queue", "a b"),
    ):
        result = run(*CLI, *arguments)
        assert result.returncode == 2, (arguments, result.stderr)
        assert "queue must be letters, digits" in result.stderr
        assert "Traceback" not in result.stderr
    assert not Queue.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_pausing_a_queue_nothing_names_is_refused_unless_forced() -> None:
    refused = run(*CLI, "queues", "pause", "nosuchqueue")
    assert refused.returncode == 2, refused.stdout
    assert "no setting, task, job or earlier pause names queue 'nosuchqueue'" in refused.stderr
    assert "--force" in refused.stderr
    assert not Queue.objects.exists()
    forced = run(*CLI, "queues", "pause", "nosuchqueue", "--force")
    assert forced.returncode == 0, forced.stderr
    assert json.loads(forced.stdout) == {"queue": "nosuchqueue", "state": "paused", "changed": True}
    again = run(*CLI, "queues", "pause", "nosuchqueue")  # its row names it now
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["changed"] is False


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("source", ["setting", "task", "job"])
def test_pausing_a_queue_that_something_names_needs_no_force(source: str) -> None:
    queue = {"setting": "default", "task": "tasks", "job": "reports"}[source]
    if source == "job":
        schedule(tasks.add, [1, 2], queue=queue)
    result = run(*CLI, "queues", "pause", queue)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["changed"] is True


def test_help_lists_every_verb_without_markup() -> None:
    result = run("-m", "aio_async", "--help")
    assert result.returncode == 0, result.stderr
    assert "`" not in result.stdout
    listed = [
        line.split()[0] for line in result.stdout.splitlines() if line.startswith("    ") and line.split()
    ]
    assert [verb for verb in VERBS if verb in listed] == list(VERBS)
    for verb in VERBS:
        page = run("-m", "aio_async", verb, "--help")
        assert page.returncode == 0, page.stderr
        assert "`" not in page.stdout, verb

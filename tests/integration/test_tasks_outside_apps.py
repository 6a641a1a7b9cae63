"""A task a worker cannot find is refused by schedule(), as the worker would refuse its job.

A worker knows the tasks that Django's set-up registers (each installed app's ``tasks``
module, and what those import) and imports only modules under ``ALLOWED_MODULES``; a task
defined elsewhere is registered only in the process that imported its module.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.conf import settings
from django.test import override_settings

from aio_async import TaskNotAllowed, TaskNotImported, allow, schedule
from aio_async.errors import InvalidArguments
from aio_async.models import Job, Status
from aio_async.values import Outcome
from tests import outside_tasks
from tests.app import tasks
from tests.app.models import Record
from tests.conftest import drain

pytestmark = pytest.mark.django_db(transaction=True)


def allowing(*modules: str) -> override_settings:
    return override_settings(AIO_ASYNC={**settings.AIO_ASYNC, "ALLOWED_MODULES": list(modules)})


def test_a_task_outside_the_installed_apps_is_refused_naming_where_tasks_live() -> None:
    with pytest.raises(TaskNotImported) as refused:
        schedule(outside_tasks.outside, ["a"])
    message = str(refused.value)
    assert "tests.outside_tasks.outside is a task of module tests.outside_tasks" in message
    assert "a worker never imports" in message
    assert "`tasks` module of an app in INSTALLED_APPS" in message
    assert "add 'tests.outside_tasks' to AIO_ASYNC['ALLOWED_MODULES']" in message
    with pytest.raises(TaskNotAllowed):  # what callers of the worker's rule already catch
        outside_tasks.outside.schedule(["a"])
    with pytest.raises(TaskNotImported):
        schedule("tests.outside_tasks.outside", ["a"])
    assert not Job.objects.exists()


def test_allowing_its_module_lets_it_through_and_a_worker_runs_it() -> None:
    with allowing("tests.app", "tests.outside_tasks"):
        job = schedule(outside_tasks.outside, ["b"])
        assert drain() == {Outcome.SUCCEEDED: 1}
    assert Job.objects.get(pk=job.pk).status == Status.SUCCEEDED
    assert Record.objects.filter(key="b").exists()


def test_a_task_registered_as_django_set_up_is_allowed_whatever_the_modules() -> None:
    with allowing("json"):
        assert schedule(tasks.decorated, ["d"]).pk  # tests.app.tasks: registered at start
        with pytest.raises(TaskNotImported):
            schedule(outside_tasks.outside, ["c"])


@pytest.fixture
def fresh_worker_registry() -> Iterator[None]:
    """This process's registry as a worker's: without the task it never imported."""
    target = allow._registry.pop("tests.outside_tasks.outside")
    yield
    allow._registry["tests.outside_tasks.outside"] = target


@pytest.mark.usefixtures("fresh_worker_registry")
def test_the_worker_says_why_it_does_not_know_the_task() -> None:
    with pytest.raises(TaskNotAllowed) as refused:
        allow.resolve("tests.outside_tasks.outside")
    message = str(refused.value)
    assert "decorate it with @aio_async.task" not in message
    assert "no task of that name was registered as this process started" in message
    assert "each installed app's `tasks` module" in message
    assert "its module was never imported here" in message
    assert "add its module to AIO_ASYNC['ALLOWED_MODULES']" in message


def test_a_misspelt_keyword_argument_is_named() -> None:
    with pytest.raises(InvalidArguments) as refused:
        schedule(tasks.write, kwargs={"kye": "x"})
    assert "missing a required argument: 'key'" in str(refused.value)
    assert "(unexpected keyword argument 'kye')" in str(refused.value)
    with pytest.raises(InvalidArguments, match=r"unexpected keyword arguments 'kye', 'valu'\)"):
        schedule(tasks.write, kwargs={"kye": "x", "valu": 1})
    with pytest.raises(InvalidArguments, match=r"got an unexpected keyword argument 'valu'$"):
        schedule(tasks.write, kwargs={"key": "x", "valu": 1})
    assert not Job.objects.exists()


def test_a_missing_module_is_named_as_a_module() -> None:
    from aio_async.errors import FunctionNotFound

    with pytest.raises(
        FunctionNotFound, match=r"^module tests\.app\.nosuch was not found \(tests\.app imports"
    ):
        schedule("tests.app.nosuch.fn")
    with pytest.raises(FunctionNotFound, match=r"^tests\.app\.tasks has no attribute 'nosuch'"):
        schedule("tests.app.tasks.nosuch")
    assert not Job.objects.exists()

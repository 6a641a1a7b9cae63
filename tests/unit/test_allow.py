"""Only allowed code runs (DESIGN promise 7): the checks made before anything is written."""

from __future__ import annotations

import pytest
from django.test import override_settings

from aio_async import allow
from aio_async.errors import FunctionNotFound, InvalidOption, NotCallable, TaskNotAllowed
from tests.app import tasks


def test_default_allows_the_projects_apps_not_django_or_aio_async() -> None:
    assert allow.allowed_modules() == ("aio_async.demo", "tests.app")


@pytest.mark.parametrize(
    "name",
    [
        "os.system",
        "subprocess.run",
        "builtins.eval",
        "django.core.management.call_command",
        "aio_async.testing.clear_queue",
        "tests.application.tasks.write",  # a prefix of a word is not a module prefix
    ],
)
def test_names_outside_the_allowed_modules_are_refused_before_import(name: str) -> None:
    with pytest.raises(TaskNotAllowed, match="not allowed"):
        allow.resolve(name)


def test_a_disallowed_function_imported_into_an_allowed_module_is_refused() -> None:
    with pytest.raises(TaskNotAllowed, match="defined in module posix"):
        allow.resolve("tests.app.tasks.system")


def test_a_module_reached_through_an_attribute_is_refused() -> None:
    with pytest.raises(TaskNotAllowed, match="reaches module os"):
        allow.resolve("tests.app.tasks.os.system")


def test_resolves_functions_class_methods_and_tasks() -> None:
    assert allow.resolve("tests.app.tasks.write").function is tasks.write
    assert allow.resolve("tests.app.tasks.Maths.double").function(4) == 8
    assert allow.resolve("tests.app.tasks.decorated").function is tasks.decorated.function


def test_unknown_module_attribute_and_not_callable() -> None:
    with pytest.raises(FunctionNotFound, match=r"module tests\.app\.nosuchmodule was not found"):
        allow.resolve("tests.app.nosuchmodule.function")
    with pytest.raises(FunctionNotFound, match="has no attribute 'nosuch'"):
        allow.resolve("tests.app.tasks.nosuch")
    with pytest.raises(NotCallable, match="is a int"):
        allow.resolve("tests.app.tasks.NOT_CALLABLE")


@pytest.mark.parametrize("name", ["", "write", "tests.app.tasks.", "1abc.x", "a b.c", 42, None])
def test_malformed_names(name: object) -> None:
    with pytest.raises(InvalidOption, match="dotted path"):
        allow.check_name(name)


def test_allowed_modules_setting_replaces_the_default() -> None:
    with override_settings(AIO_ASYNC={"ALLOWED_MODULES": ["json"]}):
        assert allow.resolve("json.dumps").function([1]) == "[1]"
        with pytest.raises(TaskNotAllowed):
            allow.resolve("tests.app.tasks.write")
        # a registered task stays allowed whatever the prefixes say
        assert allow.resolve("tests.app.tasks.decorated").function is tasks.decorated.function


def test_dotted_name_refuses_lambdas_and_nested_functions() -> None:
    def nested() -> None: ...

    assert allow.dotted_name(tasks.write) == "tests.app.tasks.write"
    assert allow.dotted_name(tasks.Maths.double) == "tests.app.tasks.Maths.double"
    with pytest.raises(FunctionNotFound, match="nested"):
        allow.dotted_name(nested)
    with pytest.raises(FunctionNotFound, match="lambda"):
        allow.dotted_name(lambda: None)

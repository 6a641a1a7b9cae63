"""The package's face: __all__ is sorted, complete, typed and documented."""

from __future__ import annotations

import inspect

import pytest

import aio_async


def test_all_is_sorted_and_importable() -> None:
    assert aio_async.__all__ == sorted(aio_async.__all__)
    for name in aio_async.__all__:
        assert getattr(aio_async, name) is not None


def test_public_names_match_all() -> None:
    public = {name for name in dir(aio_async) if not name.startswith("_")}
    # Imported submodules show up as attributes once loaded; they are not part of the face.
    public -= {name for name in public if inspect.ismodule(getattr(aio_async, name))}
    assert public <= set(aio_async.__all__) | {"annotations"}


def test_every_public_callable_has_a_docstring_and_hints() -> None:
    for name in aio_async.__all__:
        value = getattr(aio_async, name)
        assert (value.__doc__ or "").strip(), name
        if inspect.isfunction(value):
            hints = inspect.get_annotations(value)
            assert "return" in hints, name


def test_unknown_attribute_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no_such_thing"):
        aio_async.no_such_thing  # noqa: B018


def test_every_exception_the_worker_records_or_the_readme_names_can_be_imported() -> None:
    from pathlib import Path

    from django.utils.module_loading import import_string

    from aio_async import errors

    for name in errors.__all__:
        assert getattr(aio_async, name) is getattr(errors, name)
        # An Error row records the class by its module path, as Django's TaskError does.
        assert import_string(f"aio_async.errors.{name}") is getattr(errors, name)
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    for name in ("JobRefused", "WorkerLost", "ResultNotJSON"):
        assert f"`{name}`" in readme, name


def test_no_module_of_the_package_shadows_a_public_name() -> None:
    # Importing a submodule sets it as an attribute of the package: a module named like a
    # public function (``aio_async.retry``) would replace the function for everyone after.
    import importlib
    import pkgutil

    for found in pkgutil.walk_packages(aio_async.__path__, "aio_async."):
        if ".migrations" in found.name or found.name.endswith(("otel", "metrics", "drivers.psycopg")):
            continue  # optional extras (prometheus, opentelemetry, psycopg 3), and frozen history
        importlib.import_module(found.name)
    for name in aio_async.__all__:
        assert not inspect.ismodule(getattr(aio_async, name)), name

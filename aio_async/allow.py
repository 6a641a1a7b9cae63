"""Which code a job may run (DESIGN promise 7), and the registry of tasks with their options.

A name is allowed when it is a registered task (the ``aio_async.task`` decorator) or lies
under an allowed module prefix: ``AIO_ASYNC["ALLOWED_MODULES"]``, by default the modules of
every app in ``INSTALLED_APPS`` except ``aio_async`` and those under ``django.`` (third-party
apps included). The prefix is checked *before* anything is imported, and the object found is
checked again by the module that defined it, so that ``myapp.tasks.system`` (after
``from os import system``) is refused like ``os.system``.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import re
import types
from collections.abc import Callable
from typing import Any

from asgiref.sync import iscoroutinefunction
from django.apps import apps
from django.core.signals import setting_changed
from django.dispatch import receiver

from aio_async.conf import get_settings
from aio_async.errors import FunctionNotFound, InvalidOption, NotCallable, TaskNotAllowed
from aio_async.payload import TaskOptions

__all__ = ["Target", "allowed_modules", "check_name", "dotted_name", "register", "resolve"]

_DOTTED = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)+$")
_MAX_NAME = 1024


_NO_OPTIONS = TaskOptions()


@dataclasses.dataclass(frozen=True)
class Target:
    """What a job's name resolves to: the callable, how it runs, and its task's options."""

    name: str
    function: Callable[..., Any]
    is_coroutine: bool
    options: TaskOptions = _NO_OPTIONS
    #: The parameters the callable takes, to check a call before it is written; None when
    #: the callable hides them (a C function, a ``*args`` wrapper).
    signature: inspect.Signature | None = None

    @classmethod
    def of(cls, name: str, function: Callable[..., Any], options: TaskOptions = _NO_OPTIONS) -> Target:
        """The target for ``function``, with its signature read once."""
        try:
            signature: inspect.Signature | None = inspect.signature(function)
        except (TypeError, ValueError):
            signature = None
        return cls(name, function, iscoroutinefunction(function), options, signature)


#: Tasks registered with ``@aio_async.task``: allowed whatever the module prefixes say.
_registry: dict[str, Target] = {}
#: Names resolved under the module prefixes, until the settings change.
_resolved: dict[str, Target] = {}


def register(name: str, function: Callable[..., Any], options: TaskOptions) -> Target:
    """Allow ``function`` to run under ``name``, with ``options`` as its defaults."""
    target = Target.of(name, function, options)
    _registry[name] = target
    _resolved.pop(name, None)
    return target


def registered() -> dict[str, Target]:
    """Every task registered with ``@aio_async.task``, by name."""
    return dict(_registry)


def dotted_name(function: object) -> str:
    """The importable dotted path of a module-level function, class or class method."""
    target = getattr(function, "__func__", function)
    module = getattr(function, "__module__", None) or getattr(target, "__module__", None)
    qualname = getattr(target, "__qualname__", None)
    if not module or not qualname:
        raise FunctionNotFound(
            f"{function!r} has no importable name; pass a module-level function or its dotted path"
        )
    if "<" in qualname:
        raise FunctionNotFound(
            f"{module}.{qualname} is a lambda or a nested function, which a worker cannot "
            "import; define it at module level"
        )
    return f"{module}.{qualname}"


def allowed_modules() -> tuple[str, ...]:
    """The module prefixes whose callables may run."""
    configured = get_settings().allowed_modules
    if configured is not None:
        return configured
    return tuple(
        config.name
        for config in apps.get_app_configs()
        if config.name != "aio_async" and not config.name.startswith("django.")
    )


def _under(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == prefix or name.startswith(prefix + ".") for prefix in prefixes)


def check_name(name: object) -> str:
    """Check ``name`` looks like a dotted path (``package.module.function``) and return it."""
    if not isinstance(name, str) or len(name) > _MAX_NAME or not _DOTTED.match(name):
        raise InvalidOption(
            f"function must be a callable or a dotted path such as 'app.tasks.send', got {name!r:.80}"
        )
    return name


def _import_longest_module(name: str) -> tuple[types.ModuleType, list[str]]:
    parts = name.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        module_name = ".".join(parts[:cut])
        try:
            return importlib.import_module(module_name), parts[cut:]
        except ModuleNotFoundError as exc:
            missing = exc.name or ""
            if module_name == missing or module_name.startswith(missing + "."):
                continue  # this prefix is not a module; try a shorter one
            raise FunctionNotFound(f"importing {module_name} failed: {exc}") from exc
        except Exception as exc:
            raise FunctionNotFound(f"importing {module_name} failed: {type(exc).__name__}: {exc}") from exc
    raise FunctionNotFound(f"no module of {name!r} can be imported")


def resolve(name: str) -> Target:
    """Return the target that ``name`` allows, or raise the ScheduleError that says why not."""
    found = _registry.get(name) or _resolved.get(name)
    if found is not None:
        return found
    check_name(name)
    prefixes = allowed_modules()
    if not _under(name, prefixes):
        raise TaskNotAllowed(
            f"{name} is not allowed to run: decorate it with @aio_async.task or add its "
            f"module to AIO_ASYNC['ALLOWED_MODULES'] (allowed now: {list(prefixes)})"
        )
    target: Any
    target, attributes = _import_longest_module(name)
    if name in _registry:  # the import ran its @task decorator
        return _registry[name]
    for depth, attribute in enumerate(attributes):
        try:
            target = getattr(target, attribute)
        except AttributeError:
            where = ".".join(name.split(".")[: len(name.split(".")) - len(attributes) + depth])
            raise FunctionNotFound(f"{where} has no attribute {attribute!r} (from {name})") from None
        if isinstance(target, types.ModuleType):
            raise TaskNotAllowed(
                f"{name} reaches module {target.__name__} through an attribute; name the "
                "function by its own module"
            )
    if not callable(target):
        raise NotCallable(f"{name} is a {type(target).__name__}, not a callable")
    home = getattr(target, "__module__", None)
    if not isinstance(home, str) or not _under(home, prefixes):
        raise TaskNotAllowed(
            f"{name} is defined in module {home}, which is not allowed; only callables "
            f"defined under {list(prefixes)} or decorated with @aio_async.task may run"
        )
    resolved = Target.of(name, target)
    _resolved[name] = resolved
    return resolved


@receiver(setting_changed)
def _forget(*, setting: str, **_: object) -> None:
    if setting in ("AIO_ASYNC", "INSTALLED_APPS"):
        _resolved.clear()

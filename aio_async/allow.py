"""Which code a job may run (DESIGN promise 7), and the registry of tasks with their options.

A name is allowed when it is a registered task (the ``aio_async.task`` decorator) or lies
under an allowed module prefix: ``AIO_ASYNC["ALLOWED_MODULES"]``, by default the modules of
every app in ``INSTALLED_APPS`` except ``aio_async`` and those under ``django.`` (third-party
apps included). The prefix is checked *before* anything is imported, and the object found is
checked again by the module that defined it, so that ``myapp.tasks.system`` (after
``from os import system``) is refused like ``os.system``.

A worker knows the tasks registered as Django sets up (each installed app's ``tasks`` module,
imported by the app's ``ready()``, and what those import); any other module it imports only
when ``ALLOWED_MODULES`` allows it. ``schedule()`` resolves a name as such a worker would
(``resolve_for_worker``), so that a task registered only in the scheduling process (defined in
the project package or a top-level module) is refused before its job is written.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import math
import re
import types
from collections.abc import Callable
from typing import Any

from asgiref.sync import iscoroutinefunction
from django.apps import apps
from django.core.signals import setting_changed
from django.dispatch import receiver

from aio_async.conf import get_settings
from aio_async.errors import (
    FunctionNotFound,
    InvalidOption,
    JobRefused,
    NotCallable,
    ScheduleError,
    TaskNotAllowed,
    TaskNotImported,
)
from aio_async.payload import TaskOptions
from aio_async.values import Attempt

__all__ = [
    "Target",
    "allowed_modules",
    "check_name",
    "dotted_name",
    "register",
    "resolve",
    "resolve_for_worker",
    "runnable",
]

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
#: Tasks registered while Django set up (``django.setup()`` imports each installed app's
#: ``tasks`` module, and what those import): a worker with the same settings registers them
#: as it starts, too.
_at_start: set[str] = set()
#: Tasks registered later that a worker finds all the same, by importing the module that
#: their name lies under; until the settings change.
_found_later: set[str] = set()


def register(name: str, function: Callable[..., Any], options: TaskOptions) -> Target:
    """Allow ``function`` to run under ``name``, with ``options`` as its defaults."""
    target = Target.of(name, function, options)
    _registry[name] = target
    _resolved.pop(name, None)
    if apps.loading and not apps.ready:
        _at_start.add(name)
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
            f"{name} is not allowed to run: no task of that name was registered as this process "
            "started (Django's set-up imports each installed app's `tasks` module, and what those "
            f"import), and it is not under AIO_ASYNC['ALLOWED_MODULES'] (allowed now: "
            f"{list(prefixes)}), so its module was never imported here: define the task in an "
            "installed app's tasks module, or add its module to AIO_ASYNC['ALLOWED_MODULES']"
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
            if depth < len(attributes) - 1 and isinstance(target, types.ModuleType):
                # _import_longest_module tried it as a module first: it was not found
                raise FunctionNotFound(
                    f"module {where}.{attribute} was not found ({where} imports, but has no module "
                    f"or attribute {attribute!r}; from {name})"
                ) from None
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


def resolve_for_worker(name: str) -> Target:
    """Resolve ``name`` as a worker started with these settings would, or raise why not.

    A task registered in this process only after Django set up (its module imported by a
    view, a script, a shell) is not known to a worker, which registers tasks as it starts
    and otherwise imports only what ``ALLOWED_MODULES`` allows: ``TaskNotImported`` says so
    before a job is written that the worker would refuse.
    """
    target = resolve(name)
    if _registry.get(name) is not target or name in _at_start or name in _found_later:
        return target  # not a registered task (found as the worker finds it), or known at start
    prefixes = allowed_modules()
    found: Any = None
    if _under(name, prefixes):
        try:
            found, attributes = _import_longest_module(name)
            for attribute in attributes:
                found = getattr(found, attribute)
        except (ScheduleError, AttributeError):
            found = None
    if found is None:
        module = getattr(target.function, "__module__", None) or name.rpartition(".")[0]
        raise TaskNotImported(
            f"{name} is a task of module {module}, which a worker never imports, so every "
            "worker would refuse its jobs: a worker imports each installed app's `tasks` "
            "module as it starts (and what those import), and a module under "
            f"AIO_ASYNC['ALLOWED_MODULES'] (allowed now: {list(prefixes)}) when a job names it. "
            f"Define the task in the `tasks` module of an app in INSTALLED_APPS, or add {module!r} "
            "to AIO_ASYNC['ALLOWED_MODULES']"
        )
    _found_later.add(name)
    return target


@receiver(setting_changed)
def _forget(*, setting: str, **_: object) -> None:
    if setting in ("AIO_ASYNC", "INSTALLED_APPS"):
        _resolved.clear()
        _found_later.clear()


def runnable(attempt: Attempt) -> tuple[Target, list[Any], dict[str, Any]]:
    """An attempt's callable and arguments, checked again (rows can be written by anyone).

    Raises JobRefused, its cause the specific reason, for a row that cannot run.
    """
    try:
        if attempt.problem is not None:
            raise JobRefused(attempt.problem)
        target = resolve(attempt.name)
        args, kwargs = attempt.args, attempt.kwargs
        if not isinstance(args, list) or not isinstance(kwargs, dict):
            raise JobRefused(
                f"args must be a JSON array and kwargs a JSON object, got {type(args).__name__} "
                f"and {type(kwargs).__name__}"
            )
        if target.signature is not None:
            try:
                target.signature.bind(*args, **kwargs)
            except TypeError as exc:
                raise JobRefused(
                    f"the arguments do not fit {attempt.name}{target.signature}: {exc}"
                ) from None
        if attempt.timeout is not None and not 0 < attempt.timeout < math.inf:
            raise JobRefused(f"timeout must be a positive number of seconds, got {attempt.timeout!r}")
        if attempt.charged > attempt.max_attempts:
            raise JobRefused(
                f"attempt {attempt.charged} of at most {attempt.max_attempts}: no attempt is left"
            )
    except ScheduleError as exc:
        raise JobRefused(f"{type(exc).__name__}: {exc}") from exc
    return target, args, kwargs

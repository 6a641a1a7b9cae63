"""Pure checks of what a job carries: JSON values, arguments and the job's identity."""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any

from aio_async.errors import InvalidArguments

__all__ = ["JSONError", "identity", "json_value", "normalise_arguments"]


class JSONError(ValueError):
    """A value that JSON cannot store faithfully; ``path`` says where it is."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path} {problem}")
        self.path = path


def json_value(value: object, path: str = "value") -> Any:
    """Return ``value`` as JSON would give it back (tuples become lists), or raise JSONError.

    Only what survives a round trip unchanged is accepted: no NaN or infinity, no non-str
    dict keys (json would turn ``1`` into ``"1"``), no sets, dates or model instances.
    """
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise JSONError(path, f"is {value!r}, which JSON cannot hold")
        return float(value)
    if isinstance(value, list | tuple):
        return [json_value(item, f"{path}[{index}]") for index, item in enumerate(value)]
    if isinstance(value, dict):
        result = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise JSONError(path, f"has the key {key!r}; JSON object keys must be str")
            result[key] = json_value(item, f"{path}[{key!r}]")
        return result
    raise JSONError(path, f"is a {type(value).__name__} ({value!r:.80}), which is not JSON")


def normalise_arguments(args: object, kwargs: object) -> tuple[list[Any], dict[str, Any]]:
    """Check args (a list or tuple) and kwargs (a dict of identifiers) are JSON; return them."""
    if args is None:
        args = []
    if kwargs is None:
        kwargs = {}
    if not isinstance(args, list | tuple):
        raise InvalidArguments(f"args must be a list or tuple, got {type(args).__name__}: pass args=(value,)")
    if not isinstance(kwargs, dict):
        raise InvalidArguments(f"kwargs must be a dict, got {type(kwargs).__name__}")
    for key in kwargs:
        if not isinstance(key, str) or not key.isidentifier():
            raise InvalidArguments(f"kwargs key {key!r} is not a valid keyword argument name")
    try:
        return json_value(args, "args"), json_value(kwargs, "kwargs")
    except JSONError as exc:
        raise InvalidArguments(f"{exc}; job arguments must be JSON (pass ids, not objects)") from None


def identity(name: str, args: list[Any], kwargs: dict[str, Any]) -> str:
    """A stable hash of a call: the same name and arguments give the same identity."""
    text = json.dumps([name, args, kwargs], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()

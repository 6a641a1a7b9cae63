"""JSON checks and identities: pure functions, no database."""

from __future__ import annotations

import datetime
import decimal
import math

import pytest

from aio_async.errors import InvalidArguments, ScheduleError
from aio_async.payload import JSONError, identity, json_value, normalise_arguments


def test_json_value_turns_tuples_into_lists_recursively() -> None:
    assert json_value((1, (2, 3), {"a": (4,)})) == [1, [2, 3], {"a": [4]}]


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        (math.nan, "nan"),
        (math.inf, "inf"),
        ({1: "x"}, "keys must be str"),
        ({1, 2}, "set"),
        (datetime.date(2026, 1, 1), "date"),
        (decimal.Decimal("1.5"), "Decimal"),
        (object(), "object"),
        ([1, [2, b"x"]], "bytes"),
    ],
)
def test_json_value_refuses_what_json_cannot_hold(value: object, fragment: str) -> None:
    with pytest.raises(JSONError, match=fragment):
        json_value(value)


def test_json_error_names_the_path() -> None:
    with pytest.raises(JSONError) as info:
        json_value({"a": [1, {"b": {3}}]}, "kwargs")
    assert info.value.path == "kwargs['a'][1]['b']"


def test_normalise_arguments_defaults_and_copies() -> None:
    assert normalise_arguments(None, None) == ([], {})
    assert normalise_arguments((1, "x"), {"k": [True, None]}) == ([1, "x"], {"k": [True, None]})


@pytest.mark.parametrize(
    ("args", "kwargs", "fragment"),
    [
        ("abc", None, "args must be a list or tuple"),
        ({"a": 1}, None, "args must be a list or tuple"),
        (None, [("a", 1)], "kwargs must be a dict"),
        (None, {1: "a"}, "not a valid keyword"),
        (None, {"not valid": 1}, "not a valid keyword"),
        ([object()], None, "args\\[0\\]"),
        (None, {"when": datetime.datetime(2026, 1, 1)}, "kwargs\\['when'\\]"),
    ],
)
def test_normalise_arguments_refuses_bad_input(args: object, kwargs: object, fragment: str) -> None:
    with pytest.raises(InvalidArguments, match=fragment) as info:
        normalise_arguments(args, kwargs)
    assert isinstance(info.value, ScheduleError)


def test_identity_is_stable_and_ignores_kwarg_order() -> None:
    first = identity("a.b", [1], {"x": 1, "y": 2})
    assert first == identity("a.b", [1], {"y": 2, "x": 1})
    assert len(first) == 64
    assert first != identity("a.b", [2], {"x": 1, "y": 2})
    assert first != identity("a.c", [1], {"x": 1, "y": 2})

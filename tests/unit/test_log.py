"""The log module's docstring names only actions and outcomes the code really emits."""

from __future__ import annotations

import re
from pathlib import Path

from aio_async import log
from aio_async.values import Outcome

PACKAGE = Path(log.__file__).resolve().parent


def _named(pattern: str) -> set[str]:
    found = re.search(pattern, " ".join((log.__doc__ or "").split()))
    assert found is not None, pattern
    return set(re.findall(r"``(\w+)``", found.group(1)))


def test_every_action_the_docstring_names_is_emitted() -> None:
    source = "\n".join(path.read_text() for path in sorted(PACKAGE.rglob("*.py")))
    source = source.replace(log.__doc__ or "", "")
    named = _named(r"stable action name \(([^)]*)\)")
    assert named
    assert {action for action in named if f'"{action}"' not in source} == set()


def test_the_outcomes_the_docstring_names_are_the_outcomes() -> None:
    assert _named(r"``outcome`` \(([^)]*)\)") == {outcome.value for outcome in Outcome}

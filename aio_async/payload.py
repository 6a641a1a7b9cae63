"""Pure checks of what a job carries: its arguments, its options and its identity.

Nothing here touches a database: ``schedule()`` runs every check before its one write, so bad
input is refused with a specific ``ScheduleError`` and never reaches the caller's transaction
(a value PostgreSQL would refuse, such as a NUL character, would abort that transaction).
"""

from __future__ import annotations

import dataclasses
import datetime
import difflib
import hashlib
import json
import math
import re
from collections.abc import Callable, Collection, Iterable
from typing import Any, TypedDict

from django.conf import settings as django_settings
from django.utils import timezone

from aio_async.errors import InvalidArguments, InvalidOption, ResultNotJSON

__all__ = [
    "DEFAULT_PRIORITY",
    "NOT_UNIQUE",
    "NO_LIMITS",
    "PRIORITY_LIMIT",
    "JSONError",
    "JobLimits",
    "JobOptions",
    "Limits",
    "TaskOptions",
    "Unique",
    "UniqueOptions",
    "check_concurrency_limit",
    "check_max_attempts",
    "check_meta",
    "check_option_names",
    "check_priority",
    "check_queue",
    "check_rate",
    "check_text",
    "check_timeout",
    "identity",
    "json_value",
    "normalise_arguments",
    "result_value",
    "run_after_value",
]

PRIORITY_LIMIT = 1_000_000
DEFAULT_PRIORITY = 5
#: Deeper values are refused: decoding them again would exhaust Python's recursion limit.
MAX_DEPTH = 100
#: Integers beyond this many bits (about 3,900 digits) cannot be written as JSON by Python.
MAX_INT_BITS = 13_000
#: A NUL character or a lone surrogate: no PostgreSQL text or jsonb value can hold them.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
#: A queue name: letters, digits and ``_-.:``, nothing around them (``"Reports "`` is a typo).
_QUEUE_NAME = re.compile(r"[\w.:-]+")


class JSONError(ValueError):
    """A value that JSON cannot store faithfully; ``path`` says where it is."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path} {problem}")
        self.path = path


def _text(value: str, path: str) -> str:
    found = _UNSTORABLE.search(value)
    if found is not None:
        raise JSONError(path, f"holds the character {found.group()!r}, which a database cannot store")
    return value


class JobOptions(TypedDict, total=False):
    """A job's options, declared once: ``@task`` takes them as the task's defaults,
    ``schedule()``, ``schedule_many()`` and ``Task.schedule()`` for one call, and Django's
    Tasks backend as a Task's fields (``queue`` is its ``queue_name``).

    An option left out, or ``None``, is not set there: the task's default applies, then the
    queue's limits and the settings.
    """

    queue: str | None
    max_attempts: int | None
    timeout: float | None
    unique: bool | None
    unique_key: str | None
    unique_for: datetime.timedelta | float | None
    unique_states: Collection[str] | None
    on_conflict: str | None
    concurrency_key: str | Callable[..., str] | None
    concurrency_limit: int | None
    rate: str | None


def check_option_names(given: Iterable[str], known: Collection[str], where: str) -> None:
    """Refuse a keyword that is no option of ``where``, naming the closest one it may mean."""
    unknown = [name for name in given if name not in known]
    if not unknown:
        return
    problems = []
    guessed = True
    for name in unknown:
        close = difflib.get_close_matches(name, known, n=1)
        guessed = guessed and bool(close)
        problems.append(f"{name!r} (did you mean {close[0]!r}?)" if close else repr(name))
    plural = "s" if len(unknown) > 1 else ""
    takes = "" if guessed else f"; it takes {', '.join(sorted(known))}"
    raise InvalidOption(f"{where} got unknown option{plural} {', '.join(problems)}{takes}")


def json_value(value: object, path: str = "value", depth: int = 0) -> Any:
    """Return ``value`` as JSON would give it back (tuples become lists), or raise JSONError.

    Only what survives a round trip through the database unchanged is accepted: no NaN or
    infinity, no non-str dict keys (json would turn ``1`` into ``"1"``), no sets, dates or
    model instances, no NUL characters or lone surrogates, nothing nested deeper than
    ``MAX_DEPTH`` and no integer too long to print.
    """
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        return _text(value, path)
    if isinstance(value, int):
        if value.bit_length() > MAX_INT_BITS:
            raise JSONError(path, f"is an integer of {value.bit_length()} bits, too long for JSON")
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise JSONError(path, f"is {value!r}, which JSON cannot hold")
        return float(value)
    if depth >= MAX_DEPTH:
        raise JSONError(path, f"is nested more than {MAX_DEPTH} levels deep")
    if isinstance(value, list | tuple):
        return [json_value(item, f"{path}[{index}]", depth + 1) for index, item in enumerate(value)]
    if isinstance(value, dict):
        result = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise JSONError(path, f"has the key {key!r}; JSON object keys must be str")
            result[_text(key, f"{path} key")] = json_value(item, f"{path}[{key!r}]", depth + 1)
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


#: The states a job can be in, in the order of its life; the first two always count for
#: uniqueness (a job waiting for its group is queued in all but name).
UNIQUE_STATES = ("queued", "waiting", "running", "succeeded", "failed", "cancelled")
ON_CONFLICT = ("return_existing", "replace")


@dataclasses.dataclass(frozen=True)
class Unique:
    """How a job is kept from having a twin: its key, the period and states that count, the rule.

    The database enforces it: the job's row holds the key in ``unique_key`` (under a unique
    index) while the job is in one of ``states``; every write that moves the job out of them
    clears it. A job older than ``period`` seconds no longer counts, whatever its state.
    """

    #: The key the caller gave, or None: the call itself (name and arguments) is the key.
    key: str | None
    period: float | None
    states: tuple[str, ...]
    replace: bool

    def stored_key(self, name: str, call_identity: str) -> str:
        """The value of ``unique_key``: a hash, of the call or of the task's name and the key."""
        if self.key is None:
            return call_identity
        text = json.dumps(["key", name, self.key], separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()

    @property
    def stored_states(self) -> str:
        """The value of ``unique_states``: the states that count, comma-separated."""
        return ",".join(self.states)


@dataclasses.dataclass(frozen=True)
class UniqueOptions:
    """Uniqueness as a task or a call asks for it; ``None`` means "not set here"."""

    unique: bool | None = None
    key: str | None = None
    period: float | None = None
    states: tuple[str, ...] | None = None
    on_conflict: str | None = None

    @classmethod
    def checked(
        cls,
        *,
        unique: object = None,
        unique_key: object = None,
        unique_for: object = None,
        unique_states: object = None,
        on_conflict: object = None,
    ) -> UniqueOptions:
        """The options after their checks; each is refused with a specific InvalidOption."""
        if all(value is None for value in (unique, unique_key, unique_for, unique_states, on_conflict)):
            return NOT_UNIQUE  # the common case, on every schedule() call: nothing to check
        if unique is not None and not isinstance(unique, bool):
            raise InvalidOption(f"unique must be True or False, got {unique!r:.80}")
        key = None if unique_key is None else check_text(unique_key, "unique_key", limit=1024)
        if unique is False and key is not None:
            raise InvalidOption("unique=False contradicts unique_key: a key makes the job unique")
        if on_conflict is not None and on_conflict not in ON_CONFLICT:
            raise InvalidOption(
                f"on_conflict must be one of {', '.join(map(repr, ON_CONFLICT))}, got {on_conflict!r:.80}"
            )
        return cls(unique, key, _period(unique_for), _unique_states(unique_states), on_conflict)

    @classmethod
    def of(cls, options: JobOptions) -> UniqueOptions:
        """The uniqueness ``options`` ask for, checked (see ``checked``)."""
        return cls.checked(
            unique=options.get("unique"),
            unique_key=options.get("unique_key"),
            unique_for=options.get("unique_for"),
            unique_states=options.get("unique_states"),
            on_conflict=options.get("on_conflict"),
        )

    def over(self, defaults: UniqueOptions) -> UniqueOptions:
        """These options, with ``defaults``' where these are not set."""
        if defaults == NOT_UNIQUE:
            return self
        return UniqueOptions(
            *(
                mine if mine is not None else theirs
                for mine, theirs in zip(dataclasses.astuple(self), dataclasses.astuple(defaults), strict=True)
            )
        )

    def rule(self) -> Unique | None:
        """The uniqueness these options ask for, or None when the job is not unique."""
        if self is NOT_UNIQUE:
            return None
        enabled = self.unique if self.unique is not None else self.key is not None
        if not enabled:
            given = [
                name
                for name, value in (
                    ("unique_for", self.period),
                    ("unique_states", self.states),
                    ("on_conflict", self.on_conflict),
                )
                if value is not None
            ]
            if given and self.unique is None:  # unique=False turns a task's uniqueness off
                raise InvalidOption(
                    f"{' and '.join(given)} {'applies' if len(given) == 1 else 'apply'} to unique "
                    "jobs only: pass unique=True (the call is the key) or unique_key='...'"
                )
            return None
        return Unique(
            key=self.key,
            period=self.period,
            states=self.states or UNIQUE_STATES[:2],
            replace=self.on_conflict == "replace",
        )


#: No uniqueness asked for.
NOT_UNIQUE = UniqueOptions()


def _period(value: object) -> float | None:
    if value is None:
        return None
    seconds = value.total_seconds() if isinstance(value, datetime.timedelta) else value
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not 0 < seconds < math.inf:
        raise InvalidOption(
            f"unique_for must be a positive timedelta or number of seconds, got {value!r:.80}"
        )
    return float(seconds)


def _unique_states(value: object) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, str) or not isinstance(value, list | tuple | set | frozenset):
        raise InvalidOption(
            f"unique_states must be a list of states such as ['queued', 'running'], got {value!r:.80}"
        )
    states = set(value)
    unknown = sorted(map(repr, states - set(UNIQUE_STATES)))
    if unknown:
        raise InvalidOption(
            f"unique_states: {', '.join(unknown)} is not a state; states are {', '.join(UNIQUE_STATES)}"
        )
    if "queued" not in states:
        raise InvalidOption("unique_states must include 'queued': a job is scheduled queued")
    finished = sorted(states & set(UNIQUE_STATES[3:]))
    if finished and "running" not in states:
        raise InvalidOption(
            f"unique_states with {', '.join(finished)} must include 'running': a job passes through "
            "it, and once a job stops counting it does not count again"
        )
    return tuple(state for state in UNIQUE_STATES if state in states or state == "waiting")


#: The periods a rate may count over, in seconds, by the unit a rate string ends with.
RATE_PERIODS = {"s": 1.0, "second": 1.0, "m": 60.0, "minute": 60.0, "h": 3600.0, "hour": 3600.0}
_RATE = re.compile(r"^\s*(\d{1,9})\s*/\s*([a-z]+)\s*$")


def check_rate(value: object, what: str = "rate") -> tuple[int, float]:
    """A rate such as ``"5/s"``, ``"100/m"`` or ``"1000/h"``: (starts, period in seconds)."""
    found = _RATE.match(value) if isinstance(value, str) else None
    if found is None or found[2] not in RATE_PERIODS or int(found[1]) < 1:
        raise InvalidOption(
            f"{what} must be a number of starts per second, minute or hour, such as '5/s', '100/m' "
            f"or '1000/h', got {value!r:.80}"
        )
    return int(found[1]), RATE_PERIODS[found[2]]


def check_concurrency_limit(value: object, what: str = "concurrency_limit") -> int:
    """How many jobs of one key may run at once: a whole number from 1."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 1_000_000:
        raise InvalidOption(f"{what} must be a whole number from 1 to 1000000, got {value!r:.80}")
    return value


@dataclasses.dataclass(frozen=True)
class JobLimits:
    """One job's limits as stored on its row: its key, and the key's limits."""

    key: str
    concurrency: int | None
    rate: tuple[int, float] | None


@dataclasses.dataclass(frozen=True)
class Limits:
    """Limits as a task, a call or a queue's settings ask for them; ``None`` means "not set here".

    ``key`` is a string, or a callable that makes one from the job's arguments (called as the
    job's function would be); jobs with the same key share ``concurrency`` (running at once)
    and ``rate`` (starts per period), across every worker.
    """

    key: str | Callable[..., object] | None = None
    concurrency: int | None = None
    rate: tuple[int, float] | None = None

    @classmethod
    def checked(
        cls, *, concurrency_key: object = None, concurrency_limit: object = None, rate: object = None
    ) -> Limits:
        """The options after their checks; each is refused with a specific InvalidOption."""
        if concurrency_key is None and concurrency_limit is None and rate is None:
            return NO_LIMITS
        if concurrency_key is not None and not callable(concurrency_key):
            concurrency_key = check_text(concurrency_key, "concurrency_key")
        return cls(
            key=concurrency_key,
            concurrency=None if concurrency_limit is None else check_concurrency_limit(concurrency_limit),
            rate=None if rate is None else check_rate(rate),
        )

    @classmethod
    def of(cls, options: JobOptions) -> Limits:
        """The limits ``options`` ask for, checked (see ``checked``)."""
        return cls.checked(
            concurrency_key=options.get("concurrency_key"),
            concurrency_limit=options.get("concurrency_limit"),
            rate=options.get("rate"),
        )

    def over(self, defaults: Limits) -> Limits:
        """These limits, with ``defaults`` (a task's) where these are not set."""
        if self is NO_LIMITS:
            return defaults
        return Limits(
            key=self.key if self.key is not None else defaults.key,
            concurrency=self.concurrency if self.concurrency is not None else defaults.concurrency,
            rate=self.rate if self.rate is not None else defaults.rate,
        )

    def for_job(self, name: str, args: list[Any], kwargs: dict[str, Any]) -> JobLimits | None:
        """The limits of one job of task ``name``; None when it has none.

        A key without a limit, or a limit without a key (then the task's name is the key), is
        settled here; a callable key is called with the job's arguments.
        """
        if self.concurrency is None and self.rate is None:
            if self.key is not None:
                raise InvalidOption("concurrency_key needs concurrency_limit, rate, or both")
            return None
        if self.key is None:
            key = f"task:{name}"
        elif callable(self.key):
            try:
                made = self.key(*args, **kwargs)
            except Exception as exc:
                raise InvalidOption(f"concurrency_key raised {type(exc).__name__}: {exc}") from exc
            key = check_text(made, "the key concurrency_key made")
        else:
            key = self.key
        return JobLimits(key, self.concurrency, self.rate)


NO_LIMITS = Limits()


@dataclasses.dataclass(frozen=True)
class TaskOptions:
    """A task's default options; ``None`` means "not set here": the next default applies."""

    queue: str | None = None
    priority: int | None = None
    max_attempts: int | None = None
    timeout: float | None = None
    unique: UniqueOptions = NOT_UNIQUE
    limits: Limits = NO_LIMITS

    @classmethod
    def checked(
        cls,
        *,
        queue: object = None,
        priority: object = None,
        max_attempts: object = None,
        timeout: object = None,
        unique: UniqueOptions | None = None,
        limits: Limits | None = None,
    ) -> TaskOptions:
        """Options after the same checks ``schedule()`` makes; ``None`` stays unset."""
        return cls(
            queue=None if queue is None else check_queue(queue),
            priority=None if priority is None else check_priority(priority),
            max_attempts=None if max_attempts is None else check_max_attempts(max_attempts),
            timeout=check_timeout(timeout),
            unique=unique or NOT_UNIQUE,
            limits=limits or NO_LIMITS,
        )


def check_text(value: object, what: str, *, limit: int = 255) -> str:
    """A non-empty string of at most ``limit`` characters that a database can store."""
    if not isinstance(value, str) or not value or len(value) > limit:
        raise InvalidOption(
            f"{what} must be a non-empty string of at most {limit} characters, got {value!r:.80}"
        )
    try:
        return _text(value, what)
    except JSONError as exc:
        raise InvalidOption(str(exc)) from None


def check_queue(value: object) -> str:
    """A queue name: letters, digits, ``_``, ``-``, ``.`` and ``:``, at most 255 of them."""
    name = check_text(value, "queue")
    if not _QUEUE_NAME.fullmatch(name):
        raise InvalidOption(
            f"queue must be letters, digits, '_', '-', '.' and ':' only (no spaces), got {name!r:.80}"
        )
    return name


def check_priority(value: object) -> int:
    """An integer within ±PRIORITY_LIMIT; higher runs first."""
    if isinstance(value, bool) or not isinstance(value, int) or abs(value) > PRIORITY_LIMIT:
        raise InvalidOption(
            f"priority must be an integer between -{PRIORITY_LIMIT} and {PRIORITY_LIMIT} "
            f"(higher runs first), got {value!r:.80}"
        )
    return value


def check_max_attempts(value: object) -> int:
    """An integer from 1 to 1000."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 1000:
        raise InvalidOption(f"max_attempts must be an integer from 1 to 1000, got {value!r:.80}")
    return value


def check_timeout(value: object) -> float | None:
    """A positive, finite number of seconds, or None."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < math.inf:
        raise InvalidOption(f"timeout must be a positive number of seconds or None, got {value!r:.80}")
    return float(value)


def check_meta(value: object) -> dict[str, Any]:
    """A dict of JSON values (``None`` is an empty dict)."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidOption(f"meta must be a dict, got {type(value).__name__}")
    try:
        normalised: dict[str, Any] = json_value(value, "meta")
    except JSONError as exc:
        raise InvalidOption(f"{exc}; meta must be JSON") from None
    return normalised


def run_after_value(value: object, now: datetime.datetime) -> datetime.datetime:
    """When a job becomes due: ``None`` (now), a timedelta from now, or a datetime.

    A naive datetime under ``USE_TZ = True`` is read in the current time zone, as Django's
    forms read it; an aware one under ``USE_TZ = False`` is converted to local naive time.
    """
    if value is None:
        return now
    if not isinstance(value, datetime.timedelta | datetime.datetime):
        raise InvalidOption(f"run_after must be a datetime, a timedelta or None, got {type(value).__name__}")
    try:
        if isinstance(value, datetime.timedelta):
            return now + value
        if django_settings.USE_TZ and timezone.is_naive(value):
            return timezone.make_aware(value)
        if not django_settings.USE_TZ and timezone.is_aware(value):
            return timezone.make_naive(value)
    except (OverflowError, ValueError) as exc:
        raise InvalidOption(f"run_after {value!r} is outside the calendar: {exc}") from None
    return value


def result_value(value: object) -> Any:
    """A job's return value as stored JSON, or ResultNotJSON."""
    try:
        return json_value(value, "the result")
    except JSONError as exc:
        raise ResultNotJSON(f"{exc}; return JSON (or nothing) from a job") from None

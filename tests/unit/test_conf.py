"""The AIO_ASYNC setting: defaults, validation, clear errors."""

from __future__ import annotations

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

from aio_async.conf import Backoff, QueueSettings, get_settings, parse_settings, with_overrides
from aio_async.errors import InvalidOption
from aio_async.payload import check_max_attempts


def test_defaults() -> None:
    settings = parse_settings(None)
    assert settings == QueueSettings()
    assert settings.max_attempts == 5
    assert settings.backoff == Backoff(base=60.0, exponent=1.6, jitter=0.1, max=86400.0)
    assert settings.database == "default"
    assert settings.queues == ("default",)
    assert settings.heartbeat_every == pytest.approx(10.0)
    assert settings.rescue_every == pytest.approx(15.0)


def test_all_documented_keys_parse() -> None:
    settings = parse_settings(
        {
            "ALLOWED_MODULES": ["myapp", "other.jobs"],
            "MAX_ATTEMPTS": 3,
            "BACKOFF": {"BASE": 2, "EXPONENT": 2, "JITTER": 0, "MAX": 100},
            "POLL_INTERVAL": 0.5,
            "CONCURRENCY": 20,
            "DATABASE": "default",
            "QUEUES": ["a", "b"],
            "LEASE_SECONDS": 9,
            "HEARTBEAT_INTERVAL": 1,
            "RESCUE_INTERVAL": 2,
            "SHUTDOWN_TIMEOUT": 0,
            "CLAIM_FRONTIER": "never",
        }
    )
    assert settings.claim_frontier == "never"
    assert settings.allowed_modules == ("myapp", "other.jobs")
    assert settings.backoff == Backoff(base=2, exponent=2, jitter=0, max=100)
    assert settings.queues == ("a", "b")
    assert settings.heartbeat_every == 1
    assert settings.rescue_every == 2


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        (
            {"CONCURENCY": 3},
            "Unknown AIO_ASYNC keys \\['CONCURENCY'\\].* Did you mean 'CONCURRENCY' for 'CONCURENCY'\\?",
        ),
        ({"concurrency": 3}, "Did you mean 'CONCURRENCY' for 'concurrency'\\?"),
        ({"ZZZ": 3}, "known keys are \\[[^]]*\\]\\.$"),
        ({"CONCURRENCY": 0}, "CONCURRENCY.*integer >= 1"),
        ({"CONCURRENCY": True}, "CONCURRENCY.*integer"),
        ({"MAX_ATTEMPTS": 1.5}, "MAX_ATTEMPTS"),
        ({"POLL_INTERVAL": -1}, "POLL_INTERVAL"),
        ({"POLL_INTERVAL": "1"}, "POLL_INTERVAL"),
        ({"ALLOWED_MODULES": "myapp"}, "list of strings"),
        ({"QUEUES": [""]}, "non-empty strings"),
        ({"DATABASE": "nope"}, "alias of DATABASES"),
        ({"BACKOFF": 5}, "BACKOFF"),
        ({"BACKOFF": {"BAES": 1}}, "Unknown AIO_ASYNC\\['BACKOFF'\\] keys"),
        ({"BACKOFF": {"JITTER": 2}}, "fraction"),
        ("CONCURRENCY=3", "must be a dict"),
        (
            {"CLAIM_FRONTIER": "sometimes"},
            "CLAIM_FRONTIER.*must be one of 'auto', 'always', 'never', got 'sometimes'",
        ),
        ({"CLAIM_FRONTIER": True}, "CLAIM_FRONTIER.*must be one of"),
        (
            {"LOG_SUMMARY_INTERVAL": -1},
            "LOG_SUMMARY_INTERVAL'\\] must be a number of seconds >= 0.01, or 0 for no",
        ),
        ({"LOG_SUMMARY_INTERVAL": 0.001}, "LOG_SUMMARY_INTERVAL.*or 0 for no summary, got 0.001"),
        ({"LOG_SUMMARY_INTERVAL": False}, "LOG_SUMMARY_INTERVAL.*got False"),
        ({"LOG_SUMMARY_INTERVAL": None}, "LOG_SUMMARY_INTERVAL.*got None"),
    ],
)
def test_bad_settings_are_clear_errors(raw: object, fragment: str) -> None:
    with pytest.raises(ImproperlyConfigured, match=fragment):
        parse_settings(raw)


def test_the_log_summary_comes_every_minute_unless_set_and_0_turns_it_off() -> None:
    assert parse_settings(None).log_summary_interval == 60.0
    assert parse_settings({"LOG_SUMMARY_INTERVAL": 300}).log_summary_interval == 300.0
    assert parse_settings({"LOG_SUMMARY_INTERVAL": 0}).log_summary_interval == 0.0


def test_get_settings_follows_override_settings() -> None:
    before = get_settings()
    with override_settings(AIO_ASYNC={"CONCURRENCY": 7}):
        assert get_settings().concurrency == 7
    assert get_settings() == before


def linear(attempt: int) -> float:
    """A back-off policy, named by its dotted path in the tests below."""
    return 2.0 * attempt


def two_numbers(attempt: int, delay: float) -> float:
    """Not a back-off policy: it needs two arguments."""
    return delay * attempt


def test_backoff_accepts_a_dotted_path_or_callable() -> None:
    assert parse_settings({"BACKOFF": "tests.unit.test_conf.linear"}).backoff is linear
    assert parse_settings({"BACKOFF": abs}).backoff is abs
    policy = parse_settings({"BACKOFF": lambda attempt, scale=2: attempt * scale}).backoff
    assert callable(policy)
    assert policy(3) == 6


@pytest.mark.parametrize(
    ("backoff", "fragment"),
    [
        (
            "tests.unit.test_conf.nowhere",
            r"'tests\.unit\.test_conf\.nowhere' cannot be imported .*attempt number",
        ),
        ("nowhere_at_all.backoff", r"'nowhere_at_all\.backoff' cannot be imported"),
        ("math.pi", r"'math\.pi' is a float, not a function: it must take the attempt number"),
        (
            "tests.unit.test_conf.two_numbers",
            r"cannot be called with one argument, .*its signature is \(attempt: .*, delay: .*\)",
        ),
        ("os.getcwd", r"'os\.getcwd' cannot be called with one argument, the attempt number"),
        (two_numbers, r"cannot be called with one argument"),
    ],
)
def test_a_backoff_policy_is_imported_and_checked_with_the_settings(backoff: object, fragment: str) -> None:
    with pytest.raises(ImproperlyConfigured, match=r"^AIO_ASYNC\['BACKOFF'\] = .*" + fragment):
        parse_settings({"BACKOFF": backoff})


def test_max_attempts_has_the_bound_schedule_applies() -> None:
    assert parse_settings({"MAX_ATTEMPTS": 1000}).max_attempts == check_max_attempts(1000)
    with pytest.raises(InvalidOption):
        check_max_attempts(1001)
    with pytest.raises(
        ImproperlyConfigured, match=r"^AIO_ASYNC\['MAX_ATTEMPTS'\]: .*from 1 to 1000, got 1001"
    ):
        parse_settings({"MAX_ATTEMPTS": 1001})
    with pytest.raises(ImproperlyConfigured, match=r"MAX_ATTEMPTS.*from 1 to 1000, got 0"):
        parse_settings({"MAX_ATTEMPTS": 0})


@pytest.mark.parametrize(
    "raw",
    [
        {"LEASE_SECONDS": 9, "HEARTBEAT_INTERVAL": 9},
        {"LEASE_SECONDS": 5, "HEARTBEAT_INTERVAL": 12.5},
        {"HEARTBEAT_INTERVAL": 45},  # the lease is 30 s by default
    ],
)
def test_a_heartbeat_no_shorter_than_the_lease_is_refused(raw: dict[str, object]) -> None:
    with pytest.raises(
        ImproperlyConfigured,
        match=r"^AIO_ASYNC\['HEARTBEAT_INTERVAL'\] \(.* s\) must be shorter than "
        r"AIO_ASYNC\['LEASE_SECONDS'\] \(.* s\): a lease would expire between two renewals",
    ):
        parse_settings(raw)


def test_a_heartbeat_shorter_than_the_lease_or_unset_is_fine() -> None:
    assert parse_settings({"LEASE_SECONDS": 9, "HEARTBEAT_INTERVAL": 8.9}).heartbeat_every == 8.9
    assert parse_settings({"LEASE_SECONDS": 0.03}).heartbeat_every == pytest.approx(0.01)


def test_overrides_that_part_the_heartbeat_from_the_lease_are_refused() -> None:
    base = parse_settings({"LEASE_SECONDS": 9, "HEARTBEAT_INTERVAL": 3})
    with pytest.raises(
        ImproperlyConfigured, match=r"^--heartbeat \(3 s\) must be shorter than --lease \(2 s\)"
    ):
        with_overrides(
            base, {"LEASE_SECONDS": 2}, {"HEARTBEAT_INTERVAL": "--heartbeat", "LEASE_SECONDS": "--lease"}
        )


def test_a_star_in_queues_means_every_queue_and_parses() -> None:
    assert parse_settings({"QUEUES": ["*"]}).queues == ("*",)
    assert parse_settings({"QUEUES": ["mail", "*"]}).queues == ("mail", "*")


def test_nan_is_no_number() -> None:
    with pytest.raises(ImproperlyConfigured, match=r"POLL_INTERVAL.*number"):
        parse_settings({"POLL_INTERVAL": float("nan")})


def test_overrides_replace_keys_and_pass_the_settings_checks() -> None:
    base = parse_settings({"CONCURRENCY": 3, "QUEUES": ["a"]})
    settings = with_overrides(base, {"SHUTDOWN_TIMEOUT": 0, "QUEUES": ["*"]})
    assert (settings.concurrency, settings.queues, settings.shutdown_timeout) == (3, ("*",), 0.0)
    assert with_overrides(base, {}) == base


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ({"SHUTDOWN_TIMEOUT": -1.0}, "^--shutdown-timeout must be a number >= 0.0, got -1.0.$"),
        ({"CONCURRENCY": 0}, "^--concurrency must be an integer >= 1, got 0.$"),
        ({"POLL_INTERVAL": 0.0}, "^--poll-interval must be a number >= 0.01"),
        ({"QUEUES": [""]}, "^--queue must hold non-empty strings"),
        ({"CONCURENCY": 2}, "Unknown AIO_ASYNC keys \\['CONCURENCY'\\]"),
    ],
)
def test_bad_overrides_are_named_by_their_label(overrides: dict[str, object], fragment: str) -> None:
    labels = {
        "SHUTDOWN_TIMEOUT": "--shutdown-timeout",
        "CONCURRENCY": "--concurrency",
        "POLL_INTERVAL": "--poll-interval",
        "QUEUES": "--queue",
    }
    with pytest.raises(ImproperlyConfigured, match=fragment):
        with_overrides(QueueSettings(), overrides, labels)


def test_overrides_without_labels_are_named_as_the_setting() -> None:
    with pytest.raises(ImproperlyConfigured, match=r"AIO_ASYNC\[.SHUTDOWN_TIMEOUT.\] must be a number >= 0"):
        with_overrides(QueueSettings(), {"SHUTDOWN_TIMEOUT": -5})


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"METRICS_PORT": 0}, "METRICS_PORT"),
        ({"METRICS_PORT": 70000}, "a TCP port from 1 to 65535"),
        ({"METRICS_PORT": "9100"}, "METRICS_PORT"),
        ({"OPENTELEMETRY": "yes"}, "must be True or False"),
    ],
)
def test_metrics_port_and_opentelemetry_are_checked(raw: dict[str, object], message: str) -> None:
    with pytest.raises(ImproperlyConfigured, match=message):
        parse_settings(raw)
    assert parse_settings({"METRICS_PORT": 9100, "OPENTELEMETRY": True}).metrics_port == 9100

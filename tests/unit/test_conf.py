"""The AIO_ASYNC setting: defaults, validation, clear errors."""

from __future__ import annotations

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

from aio_async.conf import Backoff, QueueSettings, get_settings, parse_settings, with_overrides


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
        }
    )
    assert settings.allowed_modules == ("myapp", "other.jobs")
    assert settings.backoff == Backoff(base=2, exponent=2, jitter=0, max=100)
    assert settings.queues == ("a", "b")
    assert settings.heartbeat_every == 1
    assert settings.rescue_every == 2


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        ({"CONCURENCY": 3}, "Unknown AIO_ASYNC keys \\['CONCURENCY'\\]"),
        ({"concurrency": 3}, "Unknown AIO_ASYNC keys"),
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
    ],
)
def test_bad_settings_are_clear_errors(raw: object, fragment: str) -> None:
    with pytest.raises(ImproperlyConfigured, match=fragment):
        parse_settings(raw)


def test_get_settings_follows_override_settings() -> None:
    before = get_settings()
    with override_settings(AIO_ASYNC={"CONCURRENCY": 7}):
        assert get_settings().concurrency == 7
    assert get_settings() == before


def test_backoff_accepts_a_dotted_path_or_callable() -> None:
    assert parse_settings({"BACKOFF": "myproject.backoff"}).backoff == "myproject.backoff"
    assert parse_settings({"BACKOFF": abs}).backoff is abs


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

"""System checks: each one fires on the misconfiguration it names and stays silent otherwise."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from django.core import checks
from django.db import connection, connections
from django.test import override_settings

from aio_async import checks as aio_checks
from aio_async.conf import QueueSettings, get_settings
from tests.settings import AIO_ASYNC

#: The options aio_async's embedded settings give SQLite.
GOOD_SQLITE = {"timeout": 30, "transaction_mode": "IMMEDIATE"}


def settings_with(**keys: Any) -> dict[str, Any]:
    """The test settings' AIO_ASYNC with some keys replaced."""
    return {**AIO_ASYNC, **keys}


def ours(messages: list[checks.CheckMessage]) -> list[str]:
    """The ids of aio_async's messages, sorted."""
    return sorted(message.id for message in messages if message.id and message.id.startswith("aio_async."))


def check_run(*, deploy: bool = False) -> list[checks.CheckMessage]:
    """What ``manage.py check --tag compatibility`` finds.

    The tag leaves out Django's model checks, which on SQLite open a connection (to ask whether
    JSONField is supported); aio_async's checks need none.
    """
    return checks.run_checks(tags=[checks.Tags.compatibility], include_deployment_checks=deploy)


# E001, E002: the settings and the database ------------------------------------------------


def test_an_invalid_setting_is_e001_naming_the_key() -> None:
    with override_settings(AIO_ASYNC=settings_with(CONCURENCY=3)):
        [error] = aio_checks.check_settings()
    assert error.id == "aio_async.E001"
    assert error.level == checks.ERROR
    assert "Unknown AIO_ASYNC keys ['CONCURENCY']" in error.msg
    assert error.hint is not None
    assert "README" in error.hint


def test_override_settings_reaches_the_cached_settings() -> None:
    with override_settings(AIO_ASYNC=settings_with(CONCURRENCY=0)):
        assert ours(aio_checks.check_settings()) == ["aio_async.E001"]
    assert aio_checks.check_settings() == []
    assert get_settings().concurrency == AIO_ASYNC["CONCURRENCY"]


def test_a_database_that_is_not_an_alias_is_e002() -> None:
    with override_settings(AIO_ASYNC=settings_with(DATABASE="queue")):
        [error] = aio_checks.check_settings()
    assert error.id == "aio_async.E002"
    assert error.level == checks.ERROR
    assert error.msg == (
        "AIO_ASYNC['DATABASE'] is 'queue', which is not an alias of DATABASES (aliases: 'default')."
    )
    assert error.hint is not None
    assert "alias of the database that holds aio_async's tables" in error.hint


def test_e002_comes_with_the_other_keys_errors() -> None:
    with override_settings(AIO_ASYNC=settings_with(DATABASE="queue", CONCURENCY=3)):
        messages = aio_checks.check_settings()
    assert [message.id for message in messages] == ["aio_async.E002", "aio_async.E001"]
    assert "CONCURENCY" in messages[1].msg


def test_invalid_settings_are_reported_once_by_the_whole_check_run() -> None:
    with override_settings(AIO_ASYNC=settings_with(DATABASE="queue")):
        assert ours(check_run()) == ["aio_async.E002"]


def test_a_database_other_than_postgresql_or_sqlite_is_e001(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(connections["default"], "vendor", "oracle")
    [error] = aio_checks.check_settings()
    assert error.id == "aio_async.E001"
    assert (
        error.msg
        == "AIO_ASYNC['DATABASE'] is 'default': aio_async supports PostgreSQL and SQLite, not oracle."
    )
    assert error.hint is not None
    assert "whose ENGINE is PostgreSQL or SQLite" in error.hint
    assert aio_checks.check_sqlite() == []


def test_valid_settings_on_this_database_are_silent() -> None:
    assert aio_checks.check_settings() == []
    with override_settings(AIO_ASYNC=settings_with(DATABASE="default")):
        assert aio_checks.check_settings() == []


# W001: the allow-list --------------------------------------------------------------------


def test_each_allowed_module_that_does_not_import_is_w001_naming_it() -> None:
    entries = ["tests.app", "no_such_package.tasks", "tests.app.tasks.no_such_function"]
    with override_settings(AIO_ASYNC=settings_with(ALLOWED_MODULES=entries)):
        warnings = aio_checks.check_allowed_modules()
    assert [warning.id for warning in warnings] == ["aio_async.W001"] * 2
    assert all(warning.level == checks.WARNING for warning in warnings)
    assert warnings[0].msg == (
        "AIO_ASYNC['ALLOWED_MODULES'] entry 'no_such_package.tasks' does not import: "
        "no module named 'no_such_package'."
    )
    assert warnings[1].msg == (
        "AIO_ASYNC['ALLOWED_MODULES'] entry 'tests.app.tasks.no_such_function' does not import: "
        "tests.app.tasks has no attribute 'no_such_function'."
    )
    assert warnings[0].hint is not None
    assert "Correct its dotted path" in warnings[0].hint


def test_an_allowed_module_whose_import_fails_is_w001_with_the_cause(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "aio_async_broken_tasks.py").write_text("import aio_async_missing_dependency\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with override_settings(AIO_ASYNC=settings_with(ALLOWED_MODULES=["aio_async_broken_tasks"])):
        [warning] = aio_checks.check_allowed_modules()
    assert warning.id == "aio_async.W001"
    assert "importing aio_async_broken_tasks failed: No module named 'aio_async_missing_dependency'" in (
        warning.msg
    )


def test_allowed_modules_that_import_are_silent() -> None:
    entries = ["tests", "tests.app", "tests.app.tasks", "tests.app.tasks.add", "aio_async.demo"]
    with override_settings(AIO_ASYNC=settings_with(ALLOWED_MODULES=entries)):
        assert aio_checks.check_allowed_modules() == []
    assert aio_checks.check_allowed_modules() == []  # unset: the installed apps


def test_w001_is_part_of_the_check_run() -> None:
    with override_settings(AIO_ASYNC=settings_with(ALLOWED_MODULES=["no_such_package"])):
        assert "aio_async.W001" in ours(check_run())


# W002, W003, W004: SQLite ----------------------------------------------------------------


def test_sqlite_without_immediate_transactions_is_w002() -> None:
    for options in ({"timeout": 30}, {"timeout": 30, "transaction_mode": "DEFERRED"}):
        [warning] = aio_checks.sqlite_messages(QueueSettings(lease_seconds=60), options)
        assert warning.id == "aio_async.W002"
        assert warning.level == checks.WARNING
        assert "'default' is SQLite, and its transactions are not IMMEDIATE" in warning.msg
        assert warning.hint is not None
        assert '"transaction_mode": "IMMEDIATE"' in warning.hint
        assert "'database is locked'" in warning.hint
    [warning] = aio_checks.sqlite_messages(QueueSettings(lease_seconds=60), {"timeout": 30})
    assert "['transaction_mode'] is unset, so DEFERRED" in warning.msg


def test_sqlite_with_a_timeout_shorter_than_the_heartbeat_is_w003() -> None:
    settings = QueueSettings(lease_seconds=30)  # a heartbeat every 10 s
    [warning] = aio_checks.sqlite_messages(settings, {"timeout": 3, "transaction_mode": "IMMEDIATE"})
    assert warning.id == "aio_async.W003"
    assert warning.msg == (
        "The queue database 'default' is SQLite with a busy timeout of 3 s, shorter than the "
        "10 s between lease renewals."
    )
    assert warning.hint is not None
    assert "Set DATABASES['default']['OPTIONS']['timeout'] to at least 10" in warning.hint


def test_sqlite_without_a_timeout_has_pythons_five_seconds() -> None:
    messages = aio_checks.sqlite_messages(QueueSettings(lease_seconds=30), {"transaction_mode": "immediate"})
    assert [message.id for message in messages] == ["aio_async.W003"]
    assert "busy timeout of 5 s, Python's default" in messages[0].msg


def test_a_lease_shorter_than_the_timeout_and_a_heartbeat_is_w004() -> None:
    [warning] = aio_checks.sqlite_messages(QueueSettings(lease_seconds=30), GOOD_SQLITE)
    assert warning.id == "aio_async.W004"
    assert warning.level == checks.WARNING
    assert warning.msg == (
        "AIO_ASYNC['LEASE_SECONDS'] (30 s) is shorter than the SQLite busy timeout of the queue "
        "database 'default' (30 s) plus the heartbeat interval (10 s)."
    )
    assert warning.hint is not None
    assert "Raise AIO_ASYNC['LEASE_SECONDS'] to at least 45" in warning.hint
    assert "rescued and run again" in warning.hint
    # 45 s of lease: a heartbeat every 15 s, and 30 + 15 fits.
    assert aio_checks.sqlite_messages(QueueSettings(lease_seconds=45), GOOD_SQLITE) == []


def test_w004_with_a_set_heartbeat_asks_for_timeout_plus_heartbeat() -> None:
    settings = QueueSettings(lease_seconds=30, heartbeat_interval=5)
    [warning] = aio_checks.sqlite_messages(settings, {"timeout": 28, "transaction_mode": "IMMEDIATE"})
    assert warning.id == "aio_async.W004"
    assert warning.hint is not None
    assert "at least 33" in warning.hint


def test_sqlite_with_good_options_is_silent() -> None:
    assert aio_checks.sqlite_messages(QueueSettings(lease_seconds=60), GOOD_SQLITE) == []
    exclusive = {"timeout": 10, "transaction_mode": "EXCLUSIVE"}
    assert aio_checks.sqlite_messages(QueueSettings(lease_seconds=30), exclusive) == []


def test_the_sqlite_check_reads_the_queue_database() -> None:
    # The test settings give SQLite the embedded options (a 20 s busy timeout): a 30 s lease
    # fits, a 25 s one does not.
    assert aio_checks.check_sqlite() == []
    expected = ["aio_async.W004"] if connection.vendor == "sqlite" else []
    with override_settings(AIO_ASYNC=settings_with(LEASE_SECONDS=25)):
        assert ours(aio_checks.check_sqlite()) == expected
        assert ours(check_run()).count("aio_async.W004") == len(expected)


# I001: queues no worker serves ------------------------------------------------------------


def test_a_task_on_a_queue_that_queues_leaves_out_is_i001() -> None:
    # tests.app.tasks.decorated is registered with queue="tasks" (other modules may add more).
    [info] = [message for message in aio_checks.check_unserved_queues() if "'tasks'" in message.msg]
    assert info.id == "aio_async.I001"
    assert info.level == checks.INFO
    assert info.msg.startswith("Queue 'tasks' of task(s) ")
    assert "tests.app.tasks.decorated" in info.msg
    assert info.msg.endswith(
        " is not in AIO_ASYNC['QUEUES'] (['default']): "
        "a worker started without --queue leaves its jobs queued."
    )
    assert info.hint is not None
    assert "python -m aio_async run --queue tasks" in info.hint
    assert "aio_async.I001" in ours(check_run(deploy=True))
    assert "aio_async.I001" not in ours(check_run())  # every manage.py command runs these


def test_many_tasks_on_one_queue_are_counted_not_all_listed(monkeypatch: pytest.MonkeyPatch) -> None:
    names = [f"app.tasks.job{number}" for number in range(7)]
    monkeypatch.setattr(aio_checks, "unserved_queues", lambda settings: {"mail": names})
    [info] = aio_checks.check_unserved_queues()
    assert "app.tasks.job0, app.tasks.job1, app.tasks.job2, app.tasks.job3, app.tasks.job4 and 2 more" in (
        info.msg
    )


def test_served_queues_are_silent() -> None:
    with override_settings(AIO_ASYNC=settings_with(QUEUES=["default", "tasks"])):
        assert not any(
            message.msg.startswith("Queue 'tasks'") for message in aio_checks.check_unserved_queues()
        )
    with override_settings(AIO_ASYNC=settings_with(QUEUES=["*"])):
        assert aio_checks.check_unserved_queues() == []
        assert "aio_async.I001" not in ours(check_run(deploy=True))


def test_checks_other_than_e001_and_e002_stay_quiet_on_invalid_settings() -> None:
    with override_settings(AIO_ASYNC={"QUEUES": "tasks", "ALLOWED_MODULES": ["nope"]}):
        assert aio_checks.check_allowed_modules() == []
        assert aio_checks.check_sqlite() == []
        assert aio_checks.check_unserved_queues() == []
        assert ours(aio_checks.check_settings()) == ["aio_async.E001"]

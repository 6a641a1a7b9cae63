"""``python -m aio_async``'s parser: no abbreviations, options before and after the verb, and
the arguments of supervised workers rebuilt from the parsed options."""

from __future__ import annotations

import argparse
import logging

import pytest

from aio_async.cli.options import child_arguments, cli_level, parser, worker_overrides


def parse(*argv: str) -> argparse.Namespace:
    return parser().parse_args(argv)


@pytest.mark.parametrize(
    "argv",
    [
        ["run", "--proc", "2"],
        ["run", "--processes", "2", "--conc", "3"],
        ["--sett", "tests.settings", "run"],
        ["flush", "--filt", "x"],
    ],
)
def test_abbreviated_options_are_refused_in_one_line(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        parse(*argv)
    assert exited.value.code == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1
    assert error.startswith("python -m aio_async")
    assert ": error: " in error


def test_proc_is_not_processes(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse("run", "--proc", "2")
    assert "unrecognized arguments: --proc 2" in capsys.readouterr().err


def test_settings_and_verbosity_are_accepted_before_and_after_the_verb() -> None:
    before = parse("--settings", "a.settings", "-v", "2", "run")
    after = parse("run", "--settings", "a.settings", "--verbosity", "2")
    assert vars(before) == vars(after)
    assert (after.settings, after.verbosity, after.quiet) == ("a.settings", 2, False)
    # Given on both sides, the one after the verb wins; given only before, it is kept.
    assert parse("--settings", "a", "flush", "--settings", "b").settings == "b"
    assert parse("--settings", "a", "-q", "health").settings == "a"
    assert parse("health", "-q").quiet is True
    assert parse("--log-level", "DEBUG", "flush").log_level == "DEBUG"
    assert parse("flush", "--log-level", "ERROR").log_level == "ERROR"


@pytest.mark.parametrize(
    ("argv", "level"),
    [
        (["run"], None),
        (["run", "-v", "0"], logging.WARNING),
        (["-q", "run"], logging.WARNING),
        (["run", "-v", "1"], logging.INFO),
        (["run", "-v", "2"], logging.DEBUG),
        (["-v", "3", "run"], logging.DEBUG),
        (["run", "-q", "--log-level", "INFO"], logging.INFO),
    ],
)
def test_verbosity_maps_to_the_aio_async_logger_level(argv: list[str], level: int | None) -> None:
    assert cli_level(parse(*argv)) == level


@pytest.mark.parametrize(
    "argv",
    [
        ["run", "--processes", "2"],
        ["--settings", "x.settings", "run", "--processes=3", "--queue", "mail", "--queue", "*"],
        ["run", "--settings", "x.settings", "--concurrency", "7", "--processes", "2", "-v", "0"],
        ["-q", "--log-level", "DEBUG", "run", "--poll-interval", "0.1", "--shutdown-timeout", "2.5"],
        ["run", "--queue=-odd-", "--processes", "2"],
    ],
)
def test_child_arguments_are_the_parsed_options_without_processes(argv: list[str]) -> None:
    options = parse(*argv)
    arguments = child_arguments(options, "the.settings")
    assert not any(argument.startswith("--proc") for argument in arguments)
    child = parse(*arguments)
    assert child.processes == 1
    assert child.settings == "the.settings"
    expected = {**vars(options), "processes": 1, "settings": "the.settings"}
    assert vars(child) == expected
    assert worker_overrides(vars(child)) == worker_overrides(vars(options))


def test_child_arguments_cover_every_option_of_run() -> None:
    """A new option of ``run`` must reach the supervised workers (or be excluded here on purpose)."""
    found = parser()
    commands = next(action for action in found._actions if isinstance(action, argparse._SubParsersAction))
    run = commands.choices["run"]
    # The supervisor follows its parent; its workers follow the supervisor whatever they are told.
    dests = {action.dest for action in run._actions} - {"help", "processes", "exit_with_parent"}
    argv = ["run", "--processes", "2"]
    values = {
        "settings": ["--settings", "s"],
        "embedded": ["--embedded"],
        "log_level": ["--log-level", "WARNING"],
        "verbosity": ["-v", "3"],
        "quiet": ["-q"],
        "queue": ["--queue", "q"],
        "concurrency": ["--concurrency", "5"],
        "poll_interval": ["--poll-interval", "0.5"],
        "shutdown_timeout": ["--shutdown-timeout", "9"],
        "outcomes_json": ["--outcomes-json"],
    }
    assert dests == set(values)
    for dest in sorted(dests):
        argv += values[dest]
    options = parse(*argv)
    child = parse(*child_arguments(options, "s"))
    for dest in dests:
        assert getattr(child, dest) == getattr(options, dest), dest


def test_a_bad_number_is_one_line_with_exit_code_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        parse("flush", "--concurrency", "many")
    assert exited.value.code == 2
    assert capsys.readouterr().err.strip() == (
        "python -m aio_async flush: error: argument --concurrency: invalid int value: 'many' (see --help)"
    )

"""The frontier's rules: when claims start past it, when a sweep runs, how it moves."""

from __future__ import annotations

import datetime

from aio_async.store.frontier import (
    ENGAGE,
    ENGAGE_AFTER,
    LEVELS,
    LOOK_BACK,
    LOOK_BACK_EVERY,
    RELEASE,
    SWEEP_EVERY,
    SWEEP_SHARE,
    Frontier,
)
from aio_async.values import Attempt

T0 = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)


def attempt(job_id: int, priority: int = 5, seconds: float = 0, queue: str = "default") -> Attempt:
    due = T0 + datetime.timedelta(seconds=seconds)
    return Attempt(job_id, 1, "f", [], {}, queue=queue, priority=priority, due=due)


def test_auto_claims_past_the_frontier_only_after_slow_sweeps_in_a_row_and_until_one_is_fast() -> None:
    frontier = Frontier("auto")
    frontier.swept(100.0, ENGAGE / 2, [attempt(1)])
    assert not frontier.claims_past(100.1)
    for _ in range(ENGAGE_AFTER - 1):
        frontier.swept(100.0, ENGAGE * 2, [attempt(2)])
    frontier.swept(100.0, ENGAGE / 2, [])  # not in a row
    for _ in range(ENGAGE_AFTER - 1):
        frontier.swept(100.0, ENGAGE * 2, [])
    assert not frontier.claims_past(100.1)
    frontier.swept(101.0, ENGAGE * 2, [])
    assert frontier.claims_past(101.1)
    frontier.swept(102.0, (ENGAGE + RELEASE) / 2, [])  # between the two: stays engaged
    assert frontier.claims_past(102.1)
    frontier.swept(103.0, RELEASE / 2, [])
    assert not frontier.claims_past(103.1)


def test_a_sweep_runs_again_after_a_while_and_a_look_back_at_most_so_often() -> None:
    frontier = Frontier("always")
    assert not frontier.claims_past(0.0)  # nowhere to start from yet
    frontier.swept(10.0, 0.001, [attempt(1)])
    assert frontier.claims_past(10.0 + SWEEP_EVERY / 2)
    assert not frontier.claims_past(10.0 + SWEEP_EVERY)
    assert frontier.looks_back(10.0)
    assert not frontier.looks_back(10.0 + LOOK_BACK_EVERY / 2)
    assert frontier.looks_back(10.0 + LOOK_BACK_EVERY)


def test_slow_sweeps_run_less_often() -> None:
    frontier = Frontier("always")
    cost = 2 * SWEEP_EVERY / SWEEP_SHARE
    frontier.swept(10.0, cost, [attempt(1)])
    assert frontier.claims_past(10.0 + 1.5 * SWEEP_EVERY)
    assert not frontier.claims_past(10.0 + 2 * SWEEP_EVERY)


def test_looking_back_starts_each_level_a_little_behind_its_position() -> None:
    frontier = Frontier("always")
    frontier.advance([attempt(7, seconds=30)])
    assert frontier.levels(back=True) == [("default", 5, T0 + datetime.timedelta(seconds=30) - LOOK_BACK, 0)]


def test_the_frontier_only_moves_forward_and_keeps_the_latest_priorities() -> None:
    frontier = Frontier("always")
    frontier.advance([attempt(5, seconds=5), attempt(3, seconds=3)])
    frontier.advance([attempt(4, seconds=1)])  # behind: a sweep found a late job
    assert frontier.levels() == [("default", 5, T0 + datetime.timedelta(seconds=5), 5)]
    frontier.advance([attempt(10 + level, priority=level) for level in range(LEVELS + 1)])
    kept = [priority for _, priority, _, _ in frontier.levels()]
    assert kept == sorted(range(1, LEVELS + 1), reverse=True)  # the oldest level used (5, then 0) went


def test_each_queue_has_its_own_positions_and_paused_queues_are_left_out() -> None:
    frontier = Frontier("always")
    frontier.advance([attempt(1, queue="b"), attempt(2, queue="a"), attempt(3, priority=7, queue="b")])
    assert [(queue, priority) for queue, priority, _, _ in frontier.levels()] == [
        ("b", 7),
        ("a", 5),
        ("b", 5),
    ]
    assert [(queue, priority) for queue, priority, _, _ in frontier.levels(paused={"b"})] == [("a", 5)]


def test_never_and_jobs_without_a_position_leave_it_alone() -> None:
    frontier = Frontier("never")
    frontier.swept(1.0, 10.0, [Attempt(1, 1, "f", [], {})])
    assert not frontier.claims_past(1.1)
    assert frontier.levels() == []

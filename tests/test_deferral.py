"""The rules of Airflow's own timeout while a task waits deferred (airflow_provider_smartflows.deferral).

The whole path (a real scheduler failing the deferred task, the execution cancelled) is in
tests/system/test_deferred_waits.py and test_batch_system.py, on every Airflow line."""

from __future__ import annotations

import datetime
from types import SimpleNamespace
from typing import Any

import pytest

from airflow_provider_smartflows.deferral import (
    airflow_timeout_left,
    is_deferral_timeout,
    resume_timed_out_deferral,
)

pytestmark = pytest.mark.airflow_agnostic  # pure rules, the same on every Airflow line

UTC = datetime.timezone.utc


class Task:
    """What the rules read of a task: its execution_timeout, and the resume they hand over."""

    def __init__(self, limit: datetime.timedelta | None = None) -> None:
        self.execution_timeout = limit
        self.resumed: list[tuple[str, Any]] = []

    def resume_execution(self, next_method: str, next_kwargs: Any, context: Any) -> None:
        self.resumed.append((next_method, next_kwargs))
        raise RuntimeError("failed at the timeout")


@pytest.mark.parametrize(
    ("next_method", "error", "expected"),
    [
        ("__fail__", "Trigger/execution timeout", True),  # Airflow 2
        ("__fail__", "Trigger timeout", True),  # Airflow 3
        ("__fail__", "Trigger failure", False),
        ("execute_complete", "Trigger timeout", False),
    ],
)
def test_only_a_failing_resume_at_a_timeout_is_a_deferral_timeout(
    next_method: str, error: str, expected: bool
) -> None:
    assert is_deferral_timeout(next_method, {"error": error}) is expected


def test_pre_execute_hands_an_airflow_2_timeout_resume_to_resume_execution() -> None:
    task = Task()
    ti = SimpleNamespace(next_method="__fail__", next_kwargs={"error": "Trigger/execution timeout"})
    with pytest.raises(RuntimeError, match="failed at the timeout"):
        resume_timed_out_deferral(task, {"ti": ti})
    assert task.resumed == [("__fail__", {"error": "Trigger/execution timeout"})]


@pytest.mark.parametrize(
    "ti",
    [
        SimpleNamespace(next_method=None, next_kwargs=None),  # a first try
        SimpleNamespace(next_method="execute_complete", next_kwargs={"event": {}}),  # a normal resume
        SimpleNamespace(),  # Airflow 3's task instance: no next_method in pre_execute
    ],
)
def test_pre_execute_leaves_every_other_start_alone(ti: Any) -> None:
    task = Task()
    resume_timed_out_deferral(task, {"ti": ti})
    assert task.resumed == []


def test_what_is_left_of_execution_timeout_counts_from_the_task_start() -> None:
    started = datetime.datetime.now(UTC) - datetime.timedelta(seconds=40)
    left = airflow_timeout_left(
        Task(datetime.timedelta(seconds=60)), {"ti": SimpleNamespace(start_date=started)}
    )
    assert left is not None
    assert datetime.timedelta(seconds=15) < left <= datetime.timedelta(seconds=20)
    # Past it: one second, so that the deferral still carries a timeout.
    gone = airflow_timeout_left(
        Task(datetime.timedelta(seconds=10)), {"ti": SimpleNamespace(start_date=started)}
    )
    assert gone == datetime.timedelta(seconds=1)
    assert airflow_timeout_left(Task(None), {"ti": SimpleNamespace(start_date=started)}) is None

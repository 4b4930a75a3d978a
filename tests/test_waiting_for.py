"""The waits log what a ``Waiting`` execution waits for (``state.waitingFor``), once per stop."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import pytest

from airflow_provider_smartflows.exceptions import SmartFlowsApiError
from airflow_provider_smartflows.hooks.smartflows import SmartFlowsHook
from airflow_provider_smartflows.models import Execution, ExecutionProgress
from airflow_provider_smartflows.waiting import ExecutionWatch, Poll, ReadExecution, run_steps, wait_steps

if TYPE_CHECKING:
    from collections.abc import Iterator

LOG = logging.getLogger("test_waiting_for")
WAITING_FOR = {"type": "callback", "callbackId": "signed"}


def watch() -> ExecutionWatch:
    return ExecutionWatch(
        "e1", poll_interval=30.0, end_time=None, fail_on_warning=False, max_consecutive_failures=2, log=LOG
    )


def progress(status: str) -> ExecutionProgress:
    return ExecutionProgress.from_json({"id": "e1", "status": status})


def execution(waiting_for: Any) -> Execution:
    return Execution.from_json({"id": "e1", "status": "Waiting", "state": {"waitingFor": waiting_for}})


def lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "is Waiting for" in r.getMessage()]


@pytest.mark.airflow_agnostic
def test_each_stop_is_logged_once_with_what_it_waits_for(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, LOG.name)
    steps = wait_steps(watch())
    assert next(steps) == Poll("e1", 30)
    assert steps.send(progress("Waiting")) == ReadExecution("e1")
    assert steps.send(execution(WAITING_FOR)) == Poll("e1", 30)
    assert steps.send(progress("Waiting")) == Poll("e1", 30)  # the same stop: not read again
    assert steps.send(progress("Running")) == Poll("e1", 30)
    assert steps.send(progress("Waiting")) == ReadExecution("e1")  # a new stop
    assert steps.send(execution("the approval of the contract")) == Poll("e1", 30)
    assert lines(caplog) == [
        "execution e1 is Waiting for type=callback, callbackId=signed",
        "execution e1 is Waiting for the approval of the contract",
    ]


@pytest.mark.airflow_agnostic
def test_an_unreadable_execution_only_loses_the_line(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, LOG.name)
    steps = wait_steps(watch())
    next(steps)
    assert steps.send(progress("Waiting")) == ReadExecution("e1")
    assert steps.throw(SmartFlowsApiError("503 from the server", status_code=503)) == Poll("e1", 30)
    (line,) = lines(caplog)
    assert "state.waitingFor not read: 503 from the server" in line


@pytest.mark.airflow_agnostic
@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (None, None),
        ({}, None),
        ("", None),
        ("an e-signature", "an e-signature"),
        ({"type": "callback", "callbackId": "c1", "nested": {"x": 1}}, "type=callback, callbackId=c1"),
        (["a", "b"], "['a', 'b']"),
    ],
    ids=["null", "empty-object", "empty-text", "text", "object", "list"],
)
def test_the_model_reads_waiting_for_as_one_line(raw: Any, expected: str | None) -> None:
    assert execution(raw).waiting_for == expected


@pytest.fixture
def hook(smartflows_conn: str) -> Iterator[SmartFlowsHook]:
    sync_hook = SmartFlowsHook(smartflows_conn, timeout=5)
    try:
        yield sync_hook
    finally:
        sync_hook.close()


def test_the_worker_wait_logs_the_emulators_waiting_for(
    hook: SmartFlowsHook, smartflows_emulator: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, LOG.name)
    execution_id = hook.start_execution("signature").id
    callback_id = smartflows_emulator.executions[0]["callback_id"]
    done = watch()
    done.execution_id = execution_id
    done.poll_interval = 1.0
    released = False

    class Releasing:
        """The hook, releasing the execution once the wait has logged its stop."""

        def get_progress(self, execution_id: str, *, wait_seconds: float | None = None) -> ExecutionProgress:
            nonlocal released
            if lines(caplog) and not released:
                smartflows_emulator.release(execution_id)
                released = True
            return hook.get_progress(execution_id, wait_seconds=wait_seconds)

        def get_execution(self, execution_id: str) -> Execution:
            return hook.get_execution(execution_id)

    event = run_steps(wait_steps(done), Releasing())
    assert event["status"] == "success"
    assert lines(caplog) == [
        f"execution {execution_id} is Waiting for type=callback, callbackId={callback_id}"
    ]

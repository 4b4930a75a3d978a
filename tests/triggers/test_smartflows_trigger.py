"""SmartFlowsExecutionTrigger against the emulator over real HTTP."""

from __future__ import annotations

import asyncio
import importlib
import json
import time
from typing import Any

import pytest

from airflow_provider_smartflows.hooks.smartflows import SmartFlowsHook
from airflow_provider_smartflows.triggers.smartflows import SmartFlowsExecutionTrigger
from airflow_provider_smartflows.waiting import long_poll_seconds
from tests.support.waits import wait_until_async

pytestmark = pytest.mark.usefixtures("smartflows_conn")


def start(flow_id: str | None) -> str:
    return SmartFlowsHook(retry_limit=0).start_execution(flow_id).id


def make_trigger(execution_id: str, **kwargs: Any) -> SmartFlowsExecutionTrigger:
    kwargs.setdefault("poll_interval", 2.0)
    kwargs.setdefault("end_time", time.time() + 60)
    return SmartFlowsExecutionTrigger(execution_id, **kwargs)


async def first_event(trigger: SmartFlowsExecutionTrigger) -> dict[str, Any]:
    events = [event async for event in trigger.run()]
    assert len(events) == 1
    return events[0].payload


async def until(condition: Any, timeout: float = 10.0) -> None:
    """Wait for a condition on the emulator's state (bounded: a failing test never hangs)."""
    await wait_until_async(condition, timeout, message="the condition on the emulator's state")


def progress_requests(emulator: Any, execution_id: str) -> list[dict[str, Any]]:
    return emulator.requests_to("GET", rf"/executions/{execution_id}/progress$")


def test_serialize_returns_the_init_kwargs_and_rebuilds_an_equal_trigger() -> None:
    kwargs = {
        "execution_id": "6de9a0c1",
        "smartflows_conn_id": "sf_prod",
        "poll_interval": 5.0,
        "end_time": 1_900_000_000.5,
        "fail_on_warning": True,
        "max_consecutive_failures": 4,
        "cancel_on_kill": True,
        "end_from_trigger": True,
    }
    classpath, serialized = SmartFlowsExecutionTrigger(**kwargs).serialize()
    assert serialized == kwargs
    assert json.loads(json.dumps(serialized)) == serialized
    module, _, name = classpath.rpartition(".")
    rebuilt = getattr(importlib.import_module(module), name)(**serialized)
    assert rebuilt.serialize() == (classpath, kwargs)


def test_serialize_leaves_out_end_from_trigger_unless_set() -> None:
    """A triggerer still on the previous provider version rebuilds the trigger (rolling upgrade)."""
    _, serialized = SmartFlowsExecutionTrigger("6de9a0c1").serialize()
    assert "end_from_trigger" not in serialized
    assert SmartFlowsExecutionTrigger(**serialized).end_from_trigger is False


@pytest.mark.parametrize(
    ("poll_interval", "remaining", "expected"),
    [(30, None, 30), (30, 4.2, 5), (0.5, None, 1), (30, 0.01, 1), (10_000, None, 3600)],
    ids=["interval", "remaining-time", "never-zero", "deadline-close", "server-maximum"],
)
def test_long_poll_seconds(poll_interval: float, remaining: float | None, expected: int) -> None:
    assert long_poll_seconds(poll_interval, remaining) == expected


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("flow_id", "fail_on_warning", "status", "execution_status"),
    [
        ("hello", False, "success", "Success"),
        ("warning", False, "success", "Warning"),
        ("warning", True, "failed", "Warning"),
        ("error", False, "failed", "Error"),
        ("interrupted", False, "failed", "Interrupted"),
        ("approval", False, "input_required", "UserInput"),
    ],
    ids=["success", "warning", "warning-fails", "error", "interrupted", "user-input"],
)
async def test_event_for_each_outcome(
    smartflows_emulator: Any, flow_id: str, fail_on_warning: bool, status: str, execution_status: str
) -> None:
    execution_id = start(flow_id)
    event = await first_event(make_trigger(execution_id, fail_on_warning=fail_on_warning))
    assert event["status"] == status
    assert event["execution_status"] == execution_status
    assert event["execution_id"] == execution_id
    assert set(event) == {
        "kind",
        "status",
        "execution_id",
        "execution_status",
        "message",
        "document_ids",
        "end_time",
    }
    assert event["kind"] == "execution"


@pytest.mark.asyncio
async def test_success_event_lists_the_generated_documents(smartflows_emulator: Any) -> None:
    execution_id = start("multi-docs")
    event = await first_event(make_trigger(execution_id))
    expected = [doc.id for doc in SmartFlowsHook().list_documents(execution_id)]
    assert len(expected) == 3
    assert event["document_ids"] == expected


@pytest.mark.asyncio
async def test_user_input_event_names_the_form_keys(smartflows_emulator: Any) -> None:
    event = await first_event(make_trigger(start("approval")))
    assert "approved" in event["message"]
    assert "comment" in event["message"]


@pytest.mark.asyncio
async def test_select_flow_is_reported_for_the_worker(smartflows_emulator: Any) -> None:
    event = await first_event(make_trigger(start(None)))
    assert (event["status"], event["execution_status"]) == ("input_required", "SelectFlow")


@pytest.mark.asyncio
async def test_waiting_execution_times_out_at_end_time(smartflows_emulator: Any) -> None:
    execution_id = start("signature")
    event = await first_event(make_trigger(execution_id, poll_interval=1, end_time=time.time() + 1.5))
    assert event["status"] == "timeout"
    assert event["execution_status"] == "Waiting"
    # The trigger only reports; cancelling is the operator's decision.
    assert smartflows_emulator.requests_to("DELETE", execution_id) == []


@pytest.mark.asyncio
async def test_deadline_already_passed_times_out_without_a_request(smartflows_emulator: Any) -> None:
    execution_id = start("signature")
    event = await first_event(make_trigger(execution_id, end_time=time.time() - 1))
    assert event["status"] == "timeout"
    assert progress_requests(smartflows_emulator, execution_id) == []


@pytest.mark.asyncio
async def test_unknown_status_ends_with_an_error_naming_it(smartflows_emulator: Any) -> None:
    event = await first_event(make_trigger(start("archived"), poll_interval=1))
    assert event["status"] == "error"
    assert event["execution_status"] == "Archived"
    assert "'Archived'" in event["message"]


@pytest.mark.asyncio
async def test_auth_error_ends_at_once(smartflows_emulator: Any) -> None:
    execution_id = start("signature")
    smartflows_emulator.add_fault("status", status=401, path="/progress", times=None)
    event = await first_event(make_trigger(execution_id))
    assert event["status"] == "error"
    assert "401" in event["message"]
    assert len(progress_requests(smartflows_emulator, execution_id)) == 1


@pytest.mark.asyncio
async def test_transient_failures_are_tolerated_and_counted(smartflows_emulator: Any) -> None:
    execution_id = start("hello")
    smartflows_emulator.add_fault("status", status=503, path="/progress", times=2)
    event = await first_event(make_trigger(execution_id, poll_interval=0.1, max_consecutive_failures=2))
    assert event["status"] == "success"
    statuses = [request["status"] for request in progress_requests(smartflows_emulator, execution_id)]
    assert statuses[:3] == [503, 503, 200]


@pytest.mark.asyncio
async def test_too_many_consecutive_transient_failures_end_with_an_error(smartflows_emulator: Any) -> None:
    execution_id = start("hello")
    smartflows_emulator.add_fault("status", status=503, path="/progress", times=None)
    event = await first_event(make_trigger(execution_id, poll_interval=0.1, max_consecutive_failures=2))
    assert event["status"] == "error"
    assert "3 transient failures in a row" in event["message"]
    assert len(progress_requests(smartflows_emulator, execution_id)) == 3


@pytest.mark.asyncio
async def test_logs_one_line_per_change_not_per_poll(
    smartflows_emulator: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    execution_id = start("signature")
    trigger = make_trigger(execution_id, poll_interval=1, end_time=time.time() + 3.5)
    capsys.readouterr()
    event = await first_event(trigger)
    assert event["status"] == "timeout"
    polls = [r for r in progress_requests(smartflows_emulator, execution_id) if r["status"] == 200]
    output = capsys.readouterr()
    lines = [line for line in (output.out + output.err).splitlines() if f"execution {execution_id}:" in line]
    assert len(polls) >= 3
    assert len(lines) == 1
    assert "10 % Waiting for an external event" in lines[0]


@pytest.mark.asyncio
async def test_cancelled_mid_wait_then_rebuilt_from_serialize_finishes_the_same_execution(
    smartflows_emulator: Any,
) -> None:
    execution_id = start("signature")
    trigger = make_trigger(execution_id, poll_interval=5)
    task = asyncio.ensure_future(first_event(trigger))
    await until(lambda: len(progress_requests(smartflows_emulator, execution_id)) >= 1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    classpath, kwargs = trigger.serialize()
    module, _, name = classpath.rpartition(".")
    rebuilt = getattr(importlib.import_module(module), name)(**json.loads(json.dumps(kwargs)))
    smartflows_emulator.release(execution_id)
    event = await first_event(rebuilt)

    assert (event["status"], event["execution_id"]) == ("success", execution_id)
    assert smartflows_emulator.executions_started() == 1
    # A plain cancellation (triggerer restart, redistribution) never cancels the execution.
    assert smartflows_emulator.requests_to("DELETE", execution_id) == []


@pytest.mark.asyncio
@pytest.mark.parametrize(("cancel_on_kill", "deletes"), [(True, 1), (False, 0)], ids=["cancel", "keep"])
async def test_on_kill_cancels_only_when_asked(
    smartflows_emulator: Any, cancel_on_kill: bool, deletes: int
) -> None:
    execution_id = start("signature")
    await make_trigger(execution_id, cancel_on_kill=cancel_on_kill).on_kill()
    assert len(smartflows_emulator.requests_to("DELETE", execution_id)) == deletes
    status = SmartFlowsHook().get_progress(execution_id).raw_status
    assert (status == "Canceled") is cancel_on_kill

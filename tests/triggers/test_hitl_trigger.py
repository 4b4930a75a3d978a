"""SmartFlowsHumanInputTrigger against the emulator: it watches a form that waits for a person."""

from __future__ import annotations

import asyncio
import importlib
import json
import time
from typing import Any

import pytest

from airflow_provider_smartflows.hooks.smartflows import SmartFlowsHook
from airflow_provider_smartflows.human_input import prompt_key
from airflow_provider_smartflows.triggers.hitl import SmartFlowsHumanInputTrigger
from tests.support.waits import progress_until, wait_until_async

pytestmark = pytest.mark.usefixtures("smartflows_conn")


def at_form(flow_id: str = "approval") -> tuple[str, str]:
    """Start ``flow_id`` and wait (long-poll) until it asks for input; (execution id, prompt key)."""
    hook = SmartFlowsHook(retry_limit=0)
    execution_id = hook.start_execution(flow_id).id
    progress = progress_until(
        hook, execution_id, lambda p: p.raw_status == "UserInput", timeout=20, wait_seconds=5
    )
    return execution_id, prompt_key(progress.raw)


def make_trigger(execution_id: str, prompt: str, **kwargs: Any) -> SmartFlowsHumanInputTrigger:
    kwargs.setdefault("poll_interval", 2.0)
    kwargs.setdefault("end_time", time.time() + 60)
    return SmartFlowsHumanInputTrigger(execution_id, prompt, **kwargs)


async def first_event(trigger: SmartFlowsHumanInputTrigger) -> dict[str, Any]:
    events = [event async for event in trigger.run()]
    assert len(events) == 1
    return events[0].payload


async def polls_parked(emulator: Any, execution_id: str, count: int) -> None:
    """Wait (bounded) until the trigger has long-polled ``count`` times: it is watching."""
    path = rf"/executions/{execution_id}/progress$"
    await wait_until_async(
        lambda: len(emulator.requests_to("GET", path)) >= count, 10, message="the trigger to poll"
    )


def test_serialize_returns_the_init_kwargs() -> None:
    kwargs = {
        "execution_id": "e1",
        "prompt": "B1|approved",
        "smartflows_conn_id": "sf",
        "poll_interval": 5.0,
        "end_time": 1_900_000_000.0,
        "response_deadline": 1_900_000_100.0,
        "fail_on_warning": True,
        "max_consecutive_failures": 3,
        "cancel_on_kill": True,
    }
    classpath, serialized = SmartFlowsHumanInputTrigger(**kwargs).serialize()
    assert classpath == "airflow_provider_smartflows.triggers.hitl.SmartFlowsHumanInputTrigger"
    assert json.loads(json.dumps(serialized)) == serialized == kwargs
    module, _, name = classpath.rpartition(".")
    assert getattr(importlib.import_module(module), name)(**serialized).serialize() == (classpath, kwargs)


@pytest.mark.asyncio
async def test_answered_in_smart_flows_directly_ends_the_wait_with_no_outcome(
    smartflows_emulator: Any,
) -> None:
    execution_id, prompt = at_form()
    # Real-time steps after the answer: the trigger sees it Running, not already finished.
    smartflows_emulator.set_speedup(1.0)
    task = asyncio.ensure_future(first_event(make_trigger(execution_id, prompt)))
    await polls_parked(smartflows_emulator, execution_id, 2)
    assert not task.done()  # the form still waits: the trigger keeps watching
    SmartFlowsHook(retry_limit=0).answer_user_input(execution_id, {"approved": True, "comment": "in SF"})
    payload = await asyncio.wait_for(task, 20)
    assert payload["execution"] is None
    assert payload["execution_id"] == execution_id
    assert "left the form" in payload["message"]


@pytest.mark.asyncio
async def test_cancelled_while_waiting_for_a_person_reports_the_failure(smartflows_emulator: Any) -> None:
    execution_id, prompt = at_form()
    task = asyncio.ensure_future(first_event(make_trigger(execution_id, prompt)))
    await polls_parked(smartflows_emulator, execution_id, 2)
    SmartFlowsHook(retry_limit=0).cancel_execution(execution_id)
    payload = await asyncio.wait_for(task, 20)
    assert payload["execution"]["status"] == "failed"
    assert payload["execution"]["execution_status"] == "Canceled"


@pytest.mark.asyncio
async def test_response_timeout_ends_the_wait_and_leaves_the_execution(smartflows_emulator: Any) -> None:
    execution_id, prompt = at_form()
    trigger = make_trigger(execution_id, prompt, response_deadline=time.time() + 1.5)
    payload = await asyncio.wait_for(first_event(trigger), 20)
    assert payload["execution"]["status"] == "timeout"
    assert "Nobody answered" in payload["message"]
    # The trigger only reads: cancelling is the operator's decision.
    assert smartflows_emulator.requests_to("DELETE", execution_id) == []


@pytest.mark.asyncio
async def test_another_prompt_is_reported_as_input_required(smartflows_emulator: Any) -> None:
    execution_id, _ = at_form()
    payload = await asyncio.wait_for(first_event(make_trigger(execution_id, "B0|other-form")), 20)
    assert payload["execution"]["status"] == "input_required"


@pytest.mark.asyncio
async def test_on_kill_of_a_killed_task_cancels_the_execution(smartflows_emulator: Any) -> None:
    execution_id, prompt = at_form()
    # No task instance, so no answered request: this is a kill.
    await make_trigger(execution_id, prompt, cancel_on_kill=True).on_kill()
    assert SmartFlowsHook(retry_limit=0).get_progress(execution_id).raw_status == "Canceled"

"""SmartFlowsBatchTrigger against the emulator over real HTTP."""

from __future__ import annotations

import importlib
import json
import time
from typing import Any

import pytest

from airflow_provider_smartflows.hooks.smartflows import SmartFlowsHook
from airflow_provider_smartflows.triggers.batch import SmartFlowsBatchTrigger

pytestmark = pytest.mark.usefixtures("smartflows_conn")


def start(flow_id: str) -> str:
    return SmartFlowsHook(retry_limit=0).start_execution(flow_id).id


async def fire(trigger: SmartFlowsBatchTrigger) -> dict[str, Any]:
    events = [event async for event in trigger.run()]
    assert len(events) == 1
    return events[0].payload


def test_serialize_returns_the_init_kwargs_and_rebuilds_an_equal_trigger() -> None:
    kwargs = {
        "execution_ids": ["a1", "b2"],
        "smartflows_conn_id": "sf_prod",
        "poll_interval": 5.0,
        "end_time": 1_900_000_000.5,
        "wake_at": 1_900_000_100.0,
        "gather_seconds": 0.5,
        "fail_on_warning": True,
        "max_consecutive_failures": 4,
        "cancel_on_kill": False,
    }
    classpath, serialized = SmartFlowsBatchTrigger(**kwargs).serialize()
    assert serialized == kwargs
    assert json.loads(json.dumps(serialized)) == serialized
    module, _, name = classpath.rpartition(".")
    assert getattr(importlib.import_module(module), name)(**serialized).serialize() == (classpath, kwargs)


@pytest.mark.asyncio
async def test_fires_with_the_finished_executions_and_counts_the_others(smartflows_emulator: Any) -> None:
    done = [start("hello"), start("error")]
    waiting = start("signature")  # Waiting until released: never finishes here
    payload = await fire(SmartFlowsBatchTrigger([*done, waiting], poll_interval=5, gather_seconds=0.5))
    events = {event["execution_id"]: event for event in payload["events"]}
    assert set(events) == set(done)
    assert (events[done[0]]["status"], events[done[0]]["execution_status"]) == ("success", "Success")
    assert len(events[done[0]]["document_ids"]) == 1
    assert (events[done[1]]["status"], events[done[1]]["execution_status"]) == ("failed", "Error")
    assert payload["running"] == 1


@pytest.mark.asyncio
async def test_all_waits_share_one_session(smartflows_emulator: Any) -> None:
    ids = [start("hello") for _ in range(5)]
    payload = await fire(SmartFlowsBatchTrigger(ids, poll_interval=5, gather_seconds=5))
    assert sorted(event["execution_id"] for event in payload["events"]) == sorted(ids)
    polls = smartflows_emulator.requests_to("GET", r"/progress$")
    assert {request["path"].split("/")[-2] for request in polls} == set(ids)
    assert all("timeout" in request["query"] for request in polls)


@pytest.mark.asyncio
async def test_wakes_up_without_executions(smartflows_emulator: Any) -> None:
    payload = await fire(SmartFlowsBatchTrigger([], wake_at=time.time() + 0.2))
    assert payload == {"events": [], "running": 0}


@pytest.mark.asyncio
async def test_wakes_up_at_wake_at_while_executions_run(smartflows_emulator: Any) -> None:
    waiting = start("signature")
    payload = await fire(SmartFlowsBatchTrigger([waiting], poll_interval=5, wake_at=time.time() + 0.5))
    assert payload == {"events": [], "running": 1}


@pytest.mark.asyncio
async def test_the_deadline_times_out_every_running_execution(smartflows_emulator: Any) -> None:
    ids = [start("signature"), start("signature")]
    payload = await fire(SmartFlowsBatchTrigger(ids, poll_interval=5, end_time=time.time() + 1))
    assert sorted(event["execution_id"] for event in payload["events"]) == sorted(ids)
    assert {event["status"] for event in payload["events"]} == {"timeout"}


@pytest.mark.asyncio
async def test_on_kill_cancels_every_execution(smartflows_emulator: Any) -> None:
    ids = [start("signature"), start("signature")]
    await SmartFlowsBatchTrigger(ids, cancel_on_kill=True).on_kill()
    assert {e["status"] for e in smartflows_emulator.executions} == {"Canceled"}
    await SmartFlowsBatchTrigger([start("signature")], cancel_on_kill=False).on_kill()
    assert sorted(e["status"] for e in smartflows_emulator.executions)[:2] == ["Canceled", "Canceled"]
    assert len(smartflows_emulator.requests_to("DELETE", "/flows/executions/")) == 2

"""The deferrable sensor starts in the triggerer (Airflow >= 3.3); a plain Success ends it there."""

from __future__ import annotations

import datetime
import time
from typing import Any

import pytest

from airflow_provider_smartflows.hooks.smartflows import SmartFlowsHook
from airflow_provider_smartflows.sensors.smartflows import SmartFlowsExecutionSensor
from airflow_provider_smartflows.triggers.smartflows import SmartFlowsExecutionTrigger

TEMPLATE = "{{ ti.xcom_pull(task_ids='start', key='execution_id', map_indexes=-1) }}"


@pytest.mark.airflow_version(min="3.3", reason="start_from_trigger renders templates from Airflow 3.3")
def test_deferrable_sensor_starts_from_the_trigger_with_its_template_to_render() -> None:
    sensor = SmartFlowsExecutionSensor(
        task_id="wait", execution_id=TEMPLATE, deferrable=True, poke_interval=7, timeout=600
    )
    assert sensor.start_from_trigger is True
    args = sensor.start_trigger_args
    assert args is not None
    assert args.trigger_cls == "airflow_provider_smartflows.triggers.smartflows.SmartFlowsExecutionTrigger"
    assert args.next_method == "execute_complete"
    assert args.timeout == datetime.timedelta(seconds=600)
    assert args.trigger_kwargs == {
        "execution_id": TEMPLATE,  # rendered by the triggerer: a template field of the sensor
        "smartflows_conn_id": "smartflows_default",
        "poll_interval": 7.0,
        "fail_on_warning": False,
        "max_consecutive_failures": 10,
        "end_from_trigger": True,
    }
    assert "execution_id" in sensor.template_fields
    # The trigger rebuilds from these kwargs.
    assert SmartFlowsExecutionTrigger(**args.trigger_kwargs).end_from_trigger is True
    # The class attribute (what a mapped sensor sees) is untouched.
    assert SmartFlowsExecutionSensor.start_from_trigger is False
    assert SmartFlowsExecutionSensor.start_trigger_args.trigger_kwargs == {}


@pytest.mark.parametrize(
    "kwargs",
    [
        {"deferrable": False},
        {"deferrable": True, "start_from_trigger": False},
        # Every map index: a request the triggerer of Airflow 3.3.2 cannot answer (it hangs).
        {"deferrable": True, "execution_id": "{{ ti.xcom_pull(task_ids='start', key='execution_id') }}"},
    ],
    ids=["poking", "opted-out", "xcom-pull-without-map-indexes"],
)
def test_sensor_starts_on_a_worker_otherwise(kwargs: dict[str, Any]) -> None:
    kwargs.setdefault("execution_id", "e1")
    sensor = SmartFlowsExecutionSensor(task_id="wait", **kwargs)
    assert sensor.start_from_trigger is False


async def _events(trigger: SmartFlowsExecutionTrigger) -> list[Any]:
    return [event async for event in trigger.run()]


@pytest.mark.asyncio
@pytest.mark.usefixtures("smartflows_conn")
async def test_success_ends_the_task_in_the_triggerer_with_result_and_link(smartflows_emulator: Any) -> None:
    from airflow.triggers.base import TaskSuccessEvent

    execution_id = SmartFlowsHook(retry_limit=0).start_execution("hello").id
    trigger = SmartFlowsExecutionTrigger(
        execution_id, poll_interval=2.0, end_time=time.time() + 60, end_from_trigger=True
    )
    [event] = await _events(trigger)
    assert isinstance(event, TaskSuccessEvent)
    url = f"{smartflows_emulator.base_url}/executions/{execution_id}"
    assert event.xcoms is not None
    result = event.xcoms["return_value"]
    assert result["execution_id"] == execution_id
    assert result["status"] == "Success"
    assert result["execution_url"] == url
    assert len(result["document_ids"]) == 1
    assert event.xcoms["execution_id"] == execution_id
    assert event.xcoms["execution_url"] == url


@pytest.mark.asyncio
@pytest.mark.usefixtures("smartflows_conn")
@pytest.mark.parametrize("flow_id", ["warning", "error", "approval"], ids=["warning", "failure", "form"])
async def test_outcomes_that_need_a_worker_resume_it(smartflows_emulator: Any, flow_id: str) -> None:
    from airflow.triggers.base import TaskSuccessEvent

    execution_id = SmartFlowsHook(retry_limit=0).start_execution(flow_id).id
    trigger = SmartFlowsExecutionTrigger(
        execution_id, poll_interval=2.0, end_time=time.time() + 60, end_from_trigger=True
    )
    [event] = await _events(trigger)
    assert not isinstance(event, TaskSuccessEvent)
    assert event.payload["execution_id"] == execution_id

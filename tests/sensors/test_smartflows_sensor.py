"""SmartFlowsExecutionSensor with real Airflow (``dag.test()``) against the emulator."""

from __future__ import annotations

from typing import Any

import pytest

from airflow_provider_smartflows.exceptions import SmartFlowsExecutionError
from airflow_provider_smartflows.hooks.smartflows import SmartFlowsHook
from airflow_provider_smartflows.sensors.smartflows import SmartFlowsExecutionSensor
from tests.support.dag_runs import make_dag

pytestmark = pytest.mark.usefixtures("smartflows_conn")

MODES = pytest.mark.parametrize("deferrable", [False, True], ids=["poke", "deferrable"])


def wait_for(run_dag: Any, execution_id: str, **kwargs: Any) -> Any:
    kwargs.setdefault("poke_interval", 1)
    dag = make_dag(
        "sensor",
        lambda: SmartFlowsExecutionSensor(task_id="wait", execution_id=execution_id, **kwargs),
    )
    return run_dag(dag)


def start(flow_id: str) -> str:
    return SmartFlowsHook().start_execution(flow_id).id


@pytest.mark.slow  # a dag.test() run
@MODES
def test_waits_for_success_and_returns_the_result(
    run_dag: Any, smartflows_emulator: Any, deferrable: bool
) -> None:
    smartflows_emulator.set_speedup(10)
    execution_id = start("hello")
    result = wait_for(run_dag, execution_id, deferrable=deferrable)
    assert result.states["wait"] == "success"
    value = result.xcom("wait")
    assert (value["execution_id"], value["status"]) == (execution_id, "Success")
    assert len(value["document_ids"]) == 1
    assert result.xcom("wait", "execution_url") == value["execution_url"]


@pytest.mark.slow  # a dag.test() run
@MODES
def test_failed_execution_fails_with_the_flow_messages(
    run_dag: Any, smartflows_emulator: Any, deferrable: bool
) -> None:
    result = wait_for(run_dag, start("error"), deferrable=deferrable)
    error = result.error("wait")
    assert isinstance(error, SmartFlowsExecutionError)
    assert "Field CustomerName missing in data set" in str(error)


@pytest.mark.slow  # a dag.test() run
@MODES
def test_answers_user_input(run_dag: Any, smartflows_emulator: Any, deferrable: bool) -> None:
    execution_id = start("approval")
    result = wait_for(
        run_dag, execution_id, deferrable=deferrable, user_input={"approved": True, "comment": "fine"}
    )
    assert result.states["wait"] == "success"
    assert len(smartflows_emulator.requests_to("POST", rf"/executions/{execution_id}/progress$")) == 1


@pytest.mark.slow  # a dag.test() run
@MODES
def test_timeout_leaves_the_execution_running(
    run_dag: Any, smartflows_emulator: Any, deferrable: bool
) -> None:
    from airflow.providers.common.compat.sdk import AirflowSensorTimeout

    execution_id = start("signature")
    result = wait_for(run_dag, execution_id, deferrable=deferrable, timeout=1.5, poke_interval=0.5)
    assert isinstance(result.error("wait"), AirflowSensorTimeout)
    assert smartflows_emulator.requests_to("DELETE", execution_id) == []


def test_templated_fields() -> None:
    assert set(SmartFlowsExecutionSensor.template_fields) == {"execution_id", "user_input"}

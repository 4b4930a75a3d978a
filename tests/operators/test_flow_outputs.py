"""Named flow outputs in SmartFlowsRunFlowOperator's result (issue 25, item 3), with ``dag.test()``."""

from __future__ import annotations

from typing import Any

import pytest

from airflow_provider_smartflows.operators.smartflows import SmartFlowsRunFlowOperator
from airflow_provider_smartflows.outputs import named_outputs
from tests.support.dag_runs import make_dag

pytestmark = pytest.mark.usefixtures("smartflows_conn")
MODES = pytest.mark.parametrize("deferrable", [False, True], ids=["sync", "deferrable"])
TOTALS = {
    "id": "totals",
    "displayName": "Totals",
    "steps": [{"message": "Compute", "seconds": 1}],
    "outputs": [
        {"displayName": "Invoice total", "type": "number", "content": 1250.5},
        {"displayName": "Lines", "type": "object", "content": {"lines": ["x" * 100] * 50}},
    ],
}


def run_flow(run_dag: Any, **kwargs: Any) -> Any:
    kwargs.setdefault("poll_interval", 2)
    dag = make_dag("outputs", lambda: SmartFlowsRunFlowOperator(task_id="generate", **kwargs))
    return run_dag(dag)


@pytest.mark.slow  # a dag.test() run
@MODES
def test_the_result_carries_the_named_outputs(
    run_dag: Any, smartflows_emulator: Any, deferrable: bool
) -> None:
    smartflows_emulator.add_flow(TOTALS)
    value = run_flow(run_dag, flow_id="totals", deferrable=deferrable).xcom("generate")
    assert value["outputs"]["Invoice total"] == 1250.5
    assert value["outputs"]["Lines"] == {"lines": ["x" * 100] * 50}


@pytest.mark.slow  # a dag.test() run
def test_a_flow_without_outputs_has_an_empty_dict(run_dag: Any, smartflows_emulator: Any) -> None:
    assert run_flow(run_dag, flow_id="hello").xcom("generate")["outputs"] == {}


@pytest.mark.slow  # a dag.test() run
def test_an_output_over_the_limit_is_left_out_with_a_warning(
    run_dag: Any, smartflows_emulator: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIRFLOW__SMARTFLOWS__MAX_OUTPUT_BYTES", "1000")
    smartflows_emulator.add_flow(TOTALS)
    result = run_flow(run_dag, flow_id="totals")
    assert result.xcom("generate")["outputs"] == {"Invoice total": 1250.5}


@pytest.mark.slow  # a dag.test() run
def test_a_run_that_does_not_wait_has_no_outputs(run_dag: Any, smartflows_emulator: Any) -> None:
    smartflows_emulator.add_flow({**TOTALS, "steps": [{"message": "Compute", "seconds": 3600}]})
    assert "outputs" not in run_flow(run_dag, flow_id="totals", wait_for_completion=False).xcom("generate")


@pytest.mark.airflow_agnostic
def test_the_limit_names_what_it_leaves_out() -> None:
    execution = {
        "outputs": [
            {"output": {"id": "a", "displayName": "Small"}, "content": "ok"},
            {"output": {"id": "b", "displayName": "Big"}, "content": "y" * 50},
            {"output": {"id": "c"}, "content": 1},
            {"output": "not an object", "content": 1},
        ]
    }
    assert named_outputs(execution, 10) == ({"Small": "ok", "c": 1}, ["'Big' (52 bytes)"])
    assert named_outputs({}, 10) == ({}, [])

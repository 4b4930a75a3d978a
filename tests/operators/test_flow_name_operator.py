"""``flow_name=`` and ``skip_user_input=True`` on SmartFlowsRunFlowOperator (issue 25, items 1-2), with ``dag.test()``."""

from __future__ import annotations

from typing import Any

import pytest

from airflow_provider_smartflows.exceptions import SmartFlowsFlowNameError, SmartFlowsInputError
from airflow_provider_smartflows.operators.smartflows import SmartFlowsRunFlowOperator
from tests.support.dag_runs import make_dag

pytestmark = pytest.mark.usefixtures("smartflows_conn")
MODES = pytest.mark.parametrize("deferrable", [False, True], ids=["sync", "deferrable"])


def run_flow(run_dag: Any, **kwargs: Any) -> Any:
    kwargs.setdefault("poll_interval", 2)
    dag = make_dag("flow_name", lambda: SmartFlowsRunFlowOperator(task_id="generate", **kwargs))
    return run_dag(dag)


@pytest.mark.slow  # a dag.test() run
@MODES
def test_a_flow_name_runs_that_flow_and_names_it_in_the_result(
    run_dag: Any, smartflows_emulator: Any, deferrable: bool
) -> None:
    result = run_flow(run_dag, flow_name="hello", deferrable=deferrable)
    value = result.xcom("generate")
    assert value["status"] == "Success"
    assert (value["flow_id"], value["flow_name"]) == ("hello", "Hello")
    assert smartflows_emulator.executions_started("hello") == 1


@pytest.mark.slow  # a dag.test() run
def test_a_templated_flow_name_is_rendered_before_it_resolves(run_dag: Any, smartflows_emulator: Any) -> None:
    result = run_flow(run_dag, flow_name="{{ 'xml LETTER' }}", data="<root/>")
    value = result.xcom("generate")
    assert (value["flow_id"], value["flow_name"]) == ("xml-letter", "XML letter")


@pytest.mark.slow  # a dag.test() run
def test_an_unknown_flow_name_fails_before_any_start(run_dag: Any, smartflows_emulator: Any) -> None:
    result = run_flow(run_dag, flow_name="Helo")
    error = result.error("generate")
    assert isinstance(error, SmartFlowsFlowNameError)
    assert "'Hello'" in str(error)
    assert smartflows_emulator.requests_to("POST", r"/flows/executions") == []


@pytest.mark.slow  # a dag.test() run
def test_a_flow_id_result_names_the_flow_id(run_dag: Any, smartflows_emulator: Any) -> None:
    value = run_flow(run_dag, flow_id="hello").xcom("generate")
    assert (value["flow_id"], value["flow_name"]) == ("hello", None)


def test_flow_id_and_flow_name_together_are_refused_at_parse_time() -> None:
    with pytest.raises(SmartFlowsInputError, match="not both"):
        SmartFlowsRunFlowOperator(task_id="t", flow_id="hello", flow_name="Hello")


@pytest.mark.slow  # a dag.test() run
@MODES
def test_skip_user_input_runs_a_flow_with_a_prompt_to_the_end(
    run_dag: Any, smartflows_emulator: Any, deferrable: bool
) -> None:
    # issue 25, item 2: no user_input given, yet the "approval" flow does not stop at its form.
    result = run_flow(run_dag, flow_name="Approval", skip_user_input=True, deferrable=deferrable)
    value = result.xcom("generate")
    assert value["status"] == "Success", result.error("generate")
    assert len(smartflows_emulator.requests_to("POST", r"/flows/executions/start$")) == 1
    assert smartflows_emulator.requests_to("POST", r"/progress$") == []

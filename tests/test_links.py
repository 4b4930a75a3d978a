"""The "Smart Flows execution" extra link, from a real dag.test() run."""

from __future__ import annotations

from typing import Any

import pytest

from airflow_provider_smartflows.links import SmartFlowsExecutionLink
from airflow_provider_smartflows.operators.smartflows import SmartFlowsRunFlowOperator
from airflow_provider_smartflows.sensors.smartflows import SmartFlowsExecutionSensor
from airflow_provider_smartflows.version_compat import AIRFLOW_VERSION
from tests.support.dag_runs import make_dag

AIRFLOW_V_3_0_PLUS = int(AIRFLOW_VERSION.split(".")[0]) >= 3


def test_link_is_declared_on_the_operator_and_the_sensor() -> None:
    for operator_class in (SmartFlowsRunFlowOperator, SmartFlowsExecutionSensor):
        names = [link.name for link in operator_class.operator_extra_links]
        assert names == ["Smart Flows execution"]


@pytest.mark.slow  # a dag.test() run
@pytest.mark.parametrize(
    ("template", "expected"),
    [
        (None, "{base_url}/executions/{execution_id}"),
        ("https://ui.example.com/run/{execution_id}", "https://ui.example.com/run/{execution_id}"),
    ],
    ids=["default", "connection-template"],
)
def test_link_points_at_the_execution(
    run_dag: Any,
    smartflows_emulator: Any,
    monkeypatch: pytest.MonkeyPatch,
    template: str | None,
    expected: str,
) -> None:
    extra = {"execution_url_template": template} if template else {}
    monkeypatch.setenv("AIRFLOW_CONN_SMARTFLOWS_DEFAULT", smartflows_emulator.connection_json(**extra))
    dag = make_dag(
        "link", lambda: SmartFlowsRunFlowOperator(task_id="generate", flow_id="hello", poll_interval=2)
    )
    result = run_dag(dag)
    execution_id = result.xcom("generate", "execution_id")
    url = expected.format(base_url=smartflows_emulator.base_url, execution_id=execution_id)
    assert result.xcom("generate", "execution_url") == url
    link = SmartFlowsExecutionLink()
    if AIRFLOW_V_3_0_PLUS:
        # What the UI shows: the link Airflow 3 stores at the end of the task from get_link().
        assert result.xcom("generate", link.xcom_key) == url
    else:
        # Airflow 2's UI calls get_link() when the page asks for it.
        (ti,) = result.dag_run.get_task_instances()
        assert link.get_link(dag.get_task("generate"), ti_key=ti.key) == url


@pytest.mark.slow  # a dag.test() run
def test_failure_before_the_start_logs_no_missing_xcom(
    run_dag: Any,
    smartflows_emulator: Any,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    # An unknown flow fails before anything starts: the task never wrote ``execution_url``, and the
    # link must not look it up (Airflow 3 logged "[error] XCom not found" under the real error).
    monkeypatch.setenv("AIRFLOW_CONN_SMARTFLOWS_DEFAULT", smartflows_emulator.connection_json())
    dag = make_dag(
        "link_failed",
        lambda: SmartFlowsRunFlowOperator(task_id="generate", flow_id="no-such-flow", poll_interval=2),
    )
    result = run_dag(dag)
    assert result.error("generate") is not None
    captured = capfd.readouterr()
    logged = captured.out + captured.err + caplog.text
    assert "XCom not found" not in logged
    if AIRFLOW_V_3_0_PLUS:
        assert result.xcom("generate", SmartFlowsExecutionLink().xcom_key) in (None, "")
    else:
        (ti,) = result.dag_run.get_task_instances()
        assert SmartFlowsExecutionLink().get_link(dag.get_task("generate"), ti_key=ti.key) == ""

"""Reconciling an ambiguous start inside ``SmartFlowsRunFlowOperator`` (real ``dag.test()`` runs).

The rules themselves: ``tests/test_reconcile.py``; the hook over HTTP: ``test_reconcile_http.py``.
"""

from __future__ import annotations

import datetime
from typing import Any

import pytest

from airflow_provider_smartflows.exceptions import SmartFlowsInputError, SmartFlowsStartUnknownError
from airflow_provider_smartflows.operators.smartflows import SmartFlowsRunFlowOperator
from tests.support.dag_runs import make_dag

pytestmark = [pytest.mark.usefixtures("smartflows_conn"), pytest.mark.timeout(120)]

START = r"^/api/v1/flows/executions$"
NEEDS_TASK_STATE_STORE = pytest.mark.airflow_version(
    min="3.3", reason="the task state store (ResumableJobMixin reattach) arrived in Airflow 3.3"
)


class WorkerDiesAfterTheStart(SmartFlowsRunFlowOperator):
    """The first try dies right after its start (and the task-state write), before waiting."""

    def poll_until_complete(self, external_id: Any, context: Any) -> dict[str, Any]:  # type: ignore[override]
        if context["ti"].try_number == 1:
            raise RuntimeError(f"worker killed after starting {external_id}")
        return super().poll_until_complete(external_id, context)


def run_flow(
    run_dag: Any, operator: type[SmartFlowsRunFlowOperator] = SmartFlowsRunFlowOperator, **kwargs: Any
) -> Any:
    kwargs.setdefault("flow_id", "hello")
    kwargs.setdefault("poll_interval", 1)
    kwargs.setdefault("reconcile_settle_time", 0)
    dag = make_dag("reconcile", lambda: operator(task_id="generate", **kwargs))
    return run_dag(dag)


@pytest.mark.slow  # a dag.test() run
def test_the_created_execution_is_adopted_and_the_task_succeeds(
    run_dag: Any, smartflows_emulator: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    smartflows_emulator.add_fault("status", status=500, method="POST", path=START, when="after")
    result = run_flow(run_dag)
    (created,) = smartflows_emulator.executions
    assert result.states["generate"] == "success"
    assert result.xcom("generate")["execution_id"] == created["id"]
    assert result.xcom("generate", "execution_id") == created["id"]
    assert len(smartflows_emulator.requests_to("POST", START)) == 1
    out = capsys.readouterr().out
    assert f"Adopted Smart Flows execution {created['id']} of flow hello" in out
    assert "the start got no usable answer (HTTP 500)" in out
    assert "it is the only one of the executions of flow 'hello'" in out


@pytest.mark.slow  # a dag.test() run
@NEEDS_TASK_STATE_STORE
def test_an_adopted_execution_is_stored_for_reattach(run_dag: Any, smartflows_emulator: Any) -> None:
    smartflows_emulator.add_fault("reset", method="POST", path=START, when="after")
    result = run_flow(run_dag, WorkerDiesAfterTheStart, retries=1, retry_delay=datetime.timedelta(seconds=0))
    (created,) = smartflows_emulator.executions
    assert (result.states["generate"], result.tries["generate"]) == ("success", 2)
    assert result.xcom("generate")["execution_id"] == created["id"]
    assert len(smartflows_emulator.requests_to("POST", START)) == 1


@pytest.mark.slow  # a dag.test() run
def test_a_start_proven_not_created_is_started_again_once(
    run_dag: Any, smartflows_emulator: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    smartflows_emulator.add_fault("reset", method="POST", path=START)
    result = run_flow(run_dag)
    (created,) = smartflows_emulator.executions
    assert result.states["generate"] == "success"
    assert result.xcom("generate")["execution_id"] == created["id"]
    assert len(smartflows_emulator.requests_to("POST", START)) == 2
    assert f"Started flow hello again as execution {created['id']}" in capsys.readouterr().out


@pytest.mark.slow  # a dag.test() run
def test_a_start_that_cannot_be_reconciled_fails_without_airflow_retries(
    run_dag: Any, smartflows_emulator: Any
) -> None:
    smartflows_emulator.add_fault("reset", method="POST", path=START, when="after")
    smartflows_emulator.add_fault(
        "status", status=403, method="GET", path=r"/flows/hello/executions$", times=None
    )
    result = run_flow(run_dag, retries=2, retry_delay=datetime.timedelta(seconds=0))
    error = result.error("generate")
    assert isinstance(error, SmartFlowsStartUnknownError)
    assert "could not tell whether it was created: the flow's executions could not be listed" in str(error)
    assert (result.states["generate"], result.tries["generate"]) == ("failed", 1)
    assert smartflows_emulator.executions_started() == 1


@pytest.mark.slow  # a dag.test() run
def test_reconciling_can_be_turned_off(run_dag: Any, smartflows_emulator: Any) -> None:
    smartflows_emulator.add_fault("status", status=500, method="POST", path=START, when="after")
    result = run_flow(run_dag, reconcile_ambiguous_start=False)
    error = result.error("generate")
    assert isinstance(error, SmartFlowsStartUnknownError)
    assert "Check the flow's executions on the server before running it again" in str(error)
    assert "Looked for it" not in str(error)
    assert smartflows_emulator.requests_to("GET", r"/flows/hello/executions$") == []


@pytest.mark.parametrize(
    "kwargs",
    [{"reconcile_clock_skew": -1}, {"reconcile_settle_time": -0.5}, {"reconcile_clock_skew": "30"}],
    ids=["negative-skew", "negative-settle", "text-skew"],
)
def test_bad_reconcile_arguments_are_refused(kwargs: dict[str, Any]) -> None:
    with pytest.raises(SmartFlowsInputError, match="reconcile_"):
        SmartFlowsRunFlowOperator(task_id="t", flow_id="hello", **kwargs)

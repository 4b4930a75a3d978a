"""Restarts and retries with real Airflow (``dag.test()``): a retry never starts a second execution.

Covered elsewhere and referenced in RELIABILITY.md:
- a trigger cancelled mid-wait and rebuilt from ``serialize()`` resumes the same execution:
  tests/triggers/test_smartflows_trigger.py::test_cancelled_mid_wait_then_rebuilt_from_serialize_finishes_the_same_execution
- a try that fails on its first progress call after the POST (a failure the provider itself
  raises) reattaches on retry: tests/operators/test_run_flow_operator.py::test_retry_reattaches_to_the_running_execution
- a triggerer restart with real Airflow services: the system tests in tests/system.
"""

from __future__ import annotations

import datetime
from typing import Any

import pytest

from airflow_provider_smartflows.exceptions import SmartFlowsApiError, SmartFlowsStartUnknownError
from airflow_provider_smartflows.operators.smartflows import SmartFlowsRunFlowOperator
from tests.support.dag_runs import make_dag

from .helpers import quick_flow

# slow: a dag.test() run
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("smartflows_conn"), pytest.mark.timeout(120)]


MODES = pytest.mark.parametrize("deferrable", [False, True], ids=["sync", "deferrable"])
TWO_SECONDS_AT_50X = 100  # step seconds of the flow (the fixture's speed-up is 50)


class WorkerDiesAfterThePost(SmartFlowsRunFlowOperator):
    """The first try dies after the POST (and the task-state write), before waiting or deferring."""

    def poll_until_complete(self, external_id: Any, context: Any) -> dict[str, Any]:  # type: ignore[override]
        if context["ti"].try_number == 1:
            raise RuntimeError(f"worker killed after starting {external_id}, before deferring")
        return super().poll_until_complete(external_id, context)


def long_flow(emulator: Any) -> str:
    return emulator.add_flow(
        {
            "id": "restart-long",
            "steps": [
                {"message": "Collecting data", "percentage": 30, "seconds": TWO_SECONDS_AT_50X},
                {"message": "Generating document", "percentage": 80, "seconds": TWO_SECONDS_AT_50X},
            ],
            "documents": [{"displayName": "Long"}],
        }
    )


@pytest.mark.airflow_version(min="3.3", reason="reattach needs the task state store of Airflow 3.3")
@MODES
def test_worker_killed_between_post_and_defer_reattaches_on_retry(
    run_dag: Any, smartflows_emulator: Any, deferrable: bool
) -> None:
    flow_id = long_flow(smartflows_emulator)
    dag = make_dag(
        "restart_between_post_and_defer",
        lambda: WorkerDiesAfterThePost(
            task_id="generate",
            flow_id=flow_id,
            deferrable=deferrable,
            poll_interval=1,
            retries=1,
            retry_delay=datetime.timedelta(seconds=0),
        ),
    )
    result = run_dag(dag)

    assert isinstance(result.errors["generate"][0], RuntimeError)
    assert (result.states["generate"], result.tries["generate"]) == ("success", 2)
    assert smartflows_emulator.executions_started() == 1
    (execution,) = smartflows_emulator.executions
    value = result.xcom("generate")
    assert (value["execution_id"], value["status"]) == (execution["id"], "Success")
    # The retry asked about the stored execution instead of posting a new one.
    assert len(smartflows_emulator.requests_to("POST", r"/flows/executions$")) == 1


def test_ambiguous_start_is_not_retried_by_airflow(run_dag: Any, smartflows_emulator: Any) -> None:
    """A start POST whose outcome is unknown fails the task for good: a retry could duplicate it.

    With reconciliation off (today's rule without the listing); the reconciling operator's own
    refusal is tested in tests/hooks/test_reconcile_operator.py.
    """
    smartflows_emulator.add_flow(quick_flow("restart-ambiguous"))
    smartflows_emulator.add_fault("status", method="POST", status=500, when="after")
    dag = make_dag(
        "restart_ambiguous_start",
        lambda: SmartFlowsRunFlowOperator(
            task_id="generate",
            flow_id="restart-ambiguous",
            reconcile_ambiguous_start=False,
            poll_interval=1,
            retries=2,
            retry_delay=datetime.timedelta(seconds=0),
        ),
    )
    result = run_dag(dag)

    error = result.error("generate")
    assert isinstance(error, SmartFlowsStartUnknownError)
    assert isinstance(error, SmartFlowsApiError)
    assert "Check the flow's executions on the server before running it again" in str(error)
    assert (result.states["generate"], result.tries["generate"]) == ("failed", 1)
    assert smartflows_emulator.executions_started() == 1

"""SmartFlowsCallbackOperator (issue 25, item 4) with real Airflow (``dag.test()``) against the emulator."""

from __future__ import annotations

from typing import Any

import pytest

from airflow_provider_smartflows.exceptions import SmartFlowsCallbackError, SmartFlowsInputError
from airflow_provider_smartflows.operators.smartflows import (
    SmartFlowsCallbackOperator,
    SmartFlowsRunFlowOperator,
)
from airflow_provider_smartflows.sensors.smartflows import SmartFlowsExecutionSensor
from tests.support.dag_runs import make_dag

pytestmark = pytest.mark.usefixtures("smartflows_conn")

CALLBACK = r"^/api/v1/flows/callback/"
#: A flow that waits for an e-signature after its first step; the wait names the callback "signed".
ESIGN = {
    "id": "esign",
    "displayName": "Contract for signature",
    "steps": [
        {"message": "Send for signature", "percentage": 30, "seconds": 1},
        {"message": "Archive the signed contract", "percentage": 90, "seconds": 1},
    ],
    "waiting": {"after_step": 0, "callback_id": "signed"},
    "documents": [{"displayName": "Signed contract", "contentType": "application/pdf"}],
}
EXECUTION_ID = "{{ ti.xcom_pull(task_ids='start', key='execution_id') }}"


def resume(**kwargs: Any) -> SmartFlowsCallbackOperator:
    kwargs.setdefault("waiting_timeout", 30)
    return SmartFlowsCallbackOperator(task_id="resume", **kwargs)


def run_resume(run_dag: Any, **kwargs: Any) -> Any:
    return run_dag(make_dag("callback", lambda: resume(**kwargs)))


@pytest.mark.slow  # a dag.test() run
@pytest.mark.parametrize("deferrable", [False, True], ids=["sync", "deferrable"])
def test_a_dag_starts_resumes_and_waits_for_the_flow(
    run_dag: Any, smartflows_emulator: Any, deferrable: bool
) -> None:
    smartflows_emulator.add_flow(ESIGN)

    def build() -> None:
        start = SmartFlowsRunFlowOperator(task_id="start", flow_id="esign", wait_for_completion=False)
        signed = resume(
            execution_id=EXECUTION_ID,
            callback_id="signed",
            body={"signedBy": "{{ dag_run.conf.get('signer', 'Ada') }}"},
        )
        done = SmartFlowsExecutionSensor(
            task_id="done", execution_id=EXECUTION_ID, deferrable=deferrable, poke_interval=1
        )
        start >> signed >> done

    result = run_dag(make_dag("callback_dag", build))
    assert result.states == {"start": "success", "resume": "success", "done": "success"}
    execution_id = result.xcom("start", "execution_id")
    value = result.xcom("resume")
    assert value["execution_id"] == execution_id
    assert value["callback_id"] == "signed"
    assert value["answer"] == "OK"
    assert value["status"] in ("Running", "Success")
    assert value["execution_url"].endswith(f"/executions/{execution_id}")
    (request,) = smartflows_emulator.requests_to("POST", CALLBACK)
    assert request["query"] == {"executionId": execution_id}
    assert result.xcom("done")["status"] == "Success"
    assert len(result.xcom("done")["document_ids"]) == 1
    (summary,) = smartflows_emulator.executions
    assert summary["status"] == "Success"


@pytest.mark.slow  # a dag.test() run
def test_a_running_execution_is_waited_for_until_it_is_waiting(
    run_dag: Any, smartflows_emulator: Any
) -> None:
    smartflows_emulator.add_flow(ESIGN)
    # The first step lasts 10 real seconds, so that resume sees it Running: its task process took
    # more than 3 s to start beside the deployment tests (CI's 3.0 line), and saw it Waiting.
    smartflows_emulator.set_speedup(1 / 10)

    def build() -> None:
        start = SmartFlowsRunFlowOperator(task_id="start", flow_id="esign", wait_for_completion=False)
        start >> resume(execution_id=EXECUTION_ID, callback_id="signed")

    result = run_dag(make_dag("callback_running", build))
    assert result.states["resume"] == "success"
    execution_id = result.xcom("start", "execution_id")
    polls = smartflows_emulator.requests_to("GET", rf"/executions/{execution_id}/progress$")
    assert any("timeout" in poll["query"] for poll in polls)  # the long-poll of the wait
    assert len(smartflows_emulator.requests_to("POST", CALLBACK)) == 1


@pytest.mark.slow  # a dag.test() run
def test_the_body_is_the_resumed_stages_input(run_dag: Any, smartflows_emulator: Any) -> None:
    execution_id = start_and_wait(smartflows_emulator)
    result = run_resume(run_dag, execution_id=execution_id, callback_id="signed", body={"signedBy": "Ada"})
    assert result.states["resume"] == "success"
    stages = smartflows_api_execution(smartflows_emulator, execution_id)["state"]["stages"]
    assert stages[0]["input"] == {"signedBy": "Ada"}


@pytest.mark.slow  # a dag.test() run
def test_an_unknown_execution_fails_before_any_callback(run_dag: Any, smartflows_emulator: Any) -> None:
    result = run_resume(run_dag, execution_id="no-such-execution", callback_id="signed")
    error = result.error("resume")
    assert isinstance(error, SmartFlowsCallbackError)
    assert "execution no-such-execution was not found" in str(error)
    assert "callback signed was not sent" in str(error)
    assert smartflows_emulator.requests_to("POST", CALLBACK) == []


@pytest.mark.slow  # a dag.test() run
@pytest.mark.parametrize(
    ("flow_id", "status", "advice"),
    [
        ("hello", "Success", "nothing to resume"),
        ("approval", "UserInput", "answer it with user_input"),
    ],
    ids=["finished", "user-input"],
)
def test_an_execution_not_waiting_fails_before_any_callback(
    run_dag: Any, smartflows_emulator: Any, flow_id: str, status: str, advice: str
) -> None:
    execution_id = start_and_wait(smartflows_emulator, flow_id, status)
    result = run_resume(run_dag, execution_id=execution_id, callback_id="signed")
    error = result.error("resume")
    assert isinstance(error, SmartFlowsCallbackError)
    assert f"execution {execution_id} is {status}, not Waiting" in str(error)
    assert advice in str(error)
    assert (error.execution_id, error.callback_id, error.status) == (execution_id, "signed", status)
    assert smartflows_emulator.requests_to("POST", CALLBACK) == []


@pytest.mark.slow  # a dag.test() run
def test_a_running_execution_that_does_not_reach_waiting_in_time_fails(
    run_dag: Any, smartflows_emulator: Any
) -> None:
    smartflows_emulator.add_flow({"id": "long", "steps": [{"message": "Working", "seconds": 360000}]})
    execution_id = smartflows_emulator_start(smartflows_emulator, "long")
    result = run_resume(run_dag, execution_id=execution_id, callback_id="signed", waiting_timeout=1)
    error = result.error("resume")
    assert isinstance(error, SmartFlowsCallbackError)
    assert "did not reach Waiting within waiting_timeout (1 s)" in str(error)
    assert smartflows_emulator.requests_to("POST", CALLBACK) == []


@pytest.mark.slow  # a dag.test() run
def test_a_wrong_callback_id_is_refused_with_the_servers_answer(
    run_dag: Any, smartflows_emulator: Any
) -> None:
    execution_id = start_and_wait(smartflows_emulator)
    result = run_resume(run_dag, execution_id=execution_id, callback_id="sigend")
    error = result.error("resume")
    assert isinstance(error, SmartFlowsCallbackError)
    message = str(error)
    assert f"Smart Flows refused callback sigend for execution {execution_id} (HTTP 404)" in message
    assert f"Callback sigend not found for execution {execution_id}" in message
    assert "callbackId=signed" in message  # what the execution waits for
    assert error.http_status == 404
    assert smartflows_emulator.api_key not in message
    assert smartflows_emulator.executions[0]["status"] == "Waiting"


@pytest.mark.slow  # a dag.test() run
def test_a_bad_callback_id_fails_before_any_request(run_dag: Any, smartflows_emulator: Any) -> None:
    result = run_resume(run_dag, execution_id="e-1", callback_id="../signed")
    assert isinstance(result.error("resume"), SmartFlowsInputError)
    assert smartflows_emulator.requests == []


def test_waiting_timeout_is_checked_when_the_dag_is_parsed() -> None:
    with pytest.raises(SmartFlowsInputError, match="waiting_timeout"):
        SmartFlowsCallbackOperator(task_id="resume", execution_id="e", callback_id="c", waiting_timeout=-1)


# --- helpers -------------------------------------------------------------------------------------


def smartflows_emulator_start(emulator: Any, flow_id: str) -> str:
    """Start ``flow_id`` on the emulator over HTTP; its execution id."""
    import requests

    answer = requests.post(
        f"{emulator.base_url}/api/v1/flows/executions",
        params={"flowId": flow_id},
        headers={"X-API-Key": emulator.api_key},
        timeout=10,
    )
    answer.raise_for_status()
    return str(answer.json()["id"])


def smartflows_api_execution(emulator: Any, execution_id: str, *, wait: int = 0) -> dict[str, Any]:
    import requests

    answer = requests.get(
        f"{emulator.base_url}/api/v1/flows/executions/{execution_id}/progress"
        if wait
        else f"{emulator.base_url}/api/v1/flows/executions/{execution_id}",
        params={"timeout": wait} if wait else None,
        headers={"X-API-Key": emulator.api_key},
        timeout=10 + wait,
    )
    answer.raise_for_status()
    return dict(answer.json())


def start_and_wait(emulator: Any, flow_id: str = "esign", status: str = "Waiting") -> str:
    """An execution of ``flow_id`` once it has reached ``status``."""
    if flow_id == "esign":
        emulator.add_flow(ESIGN)
    execution_id = smartflows_emulator_start(emulator, flow_id)
    for _ in range(60):
        if smartflows_api_execution(emulator, execution_id, wait=1)["status"] == status:
            return execution_id
    raise AssertionError(f"execution {execution_id} never reached {status}")

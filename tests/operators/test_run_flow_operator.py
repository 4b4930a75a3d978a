"""SmartFlowsRunFlowOperator with real Airflow (``dag.test()``) against the emulator."""

from __future__ import annotations

import datetime
import re
from typing import Any

import pytest

from airflow_provider_smartflows.exceptions import (
    SmartFlowsAuthError,
    SmartFlowsExecutionError,
    SmartFlowsInputError,
    SmartFlowsTimeoutError,
)
from airflow_provider_smartflows.operators.smartflows import SmartFlowsRunFlowOperator
from airflow_provider_smartflows.version_compat import AIRFLOW_V_3_3_PLUS
from tests.support.dag_runs import make_dag

pytestmark = pytest.mark.usefixtures("smartflows_conn")


NEEDS_TASK_STATE_STORE = pytest.mark.airflow_version(
    min="3.3", reason="the task state store (ResumableJobMixin reattach) arrived in Airflow 3.3"
)
MODES = pytest.mark.parametrize("deferrable", [False, True], ids=["sync", "deferrable"])


def run_flow(run_dag: Any, **kwargs: Any) -> Any:
    kwargs.setdefault("poll_interval", 2)
    dag = make_dag("run_flow", lambda: SmartFlowsRunFlowOperator(task_id="generate", **kwargs))
    return run_dag(dag)


@pytest.mark.slow  # a dag.test() run
@MODES
def test_success_returns_the_result_and_pushes_the_execution(
    run_dag: Any, smartflows_emulator: Any, deferrable: bool
) -> None:
    result = run_flow(run_dag, flow_id="hello", deferrable=deferrable)
    assert result.states["generate"] == "success"
    value = result.xcom("generate")
    execution_id = value["execution_id"]
    assert value["status"] == "Success"
    assert len(value["document_ids"]) == 1
    assert smartflows_emulator.document_size(value["document_ids"][0]) > 0
    assert value["execution_url"].endswith(f"/executions/{execution_id}")
    assert result.xcom("generate", "execution_id") == execution_id
    assert result.xcom("generate", "execution_url") == value["execution_url"]
    assert smartflows_emulator.executions_started("hello") == 1


@pytest.mark.slow  # a dag.test() run
def test_deferrable_waits_in_the_trigger(run_dag: Any, smartflows_emulator: Any) -> None:
    smartflows_emulator.set_speedup(1)  # real speed: the first check surely sees it running, so it defers
    result = run_flow(run_dag, flow_id="hello", deferrable=True, poll_interval=5)
    assert result.states["generate"] == "success"
    execution_id = result.xcom("generate")["execution_id"]
    polls = smartflows_emulator.requests_to("GET", rf"/executions/{execution_id}/progress$")
    assert any("timeout" in request["query"] for request in polls)


@pytest.mark.slow  # a dag.test() run
@MODES
@pytest.mark.parametrize(
    ("flow_id", "status", "expected"),
    [
        ("error", "Error", "TemplateError: Field CustomerName missing in data set"),
        ("interrupted", "Interrupted", "ended with status Interrupted"),
    ],
    ids=["error", "interrupted"],
)
def test_failed_execution_raises_with_the_flow_messages(
    run_dag: Any, smartflows_emulator: Any, deferrable: bool, flow_id: str, status: str, expected: str
) -> None:
    result = run_flow(run_dag, flow_id=flow_id, deferrable=deferrable)
    assert result.states["generate"] == "failed"
    error = result.error("generate")
    assert isinstance(error, SmartFlowsExecutionError)
    assert error.status == status
    assert expected in str(error)


@pytest.mark.slow  # a dag.test() run
@MODES
def test_canceled_execution_fails(run_dag: Any, smartflows_emulator: Any, deferrable: bool) -> None:
    # Cancelled by someone else (here: a thread) while the task waits for the signature.
    dag = make_dag(
        "canceled",
        lambda: SmartFlowsRunFlowOperator(
            task_id="generate", flow_id="signature", deferrable=deferrable, poll_interval=1, timeout=30
        ),
    )

    import threading

    def cancel_when_waiting() -> None:
        for _ in range(500):
            waiting = [e for e in smartflows_emulator.executions if e["status"] == "Waiting"]
            if waiting:
                from airflow_provider_smartflows.hooks.smartflows import SmartFlowsHook

                SmartFlowsHook().cancel_execution(waiting[0]["id"])
                return
            threading.Event().wait(0.02)

    canceller = threading.Thread(target=cancel_when_waiting)
    canceller.start()
    try:
        result = run_dag(dag)
    finally:
        canceller.join()
    error = result.error("generate")
    assert isinstance(error, SmartFlowsExecutionError)
    assert error.status == "Canceled"


@pytest.mark.slow  # a dag.test() run
@MODES
@pytest.mark.parametrize(
    ("fail_on_warning", "state"), [(False, "success"), (True, "failed")], ids=["tolerated", "fails"]
)
def test_warning_policy(
    run_dag: Any,
    smartflows_emulator: Any,
    capsys: pytest.CaptureFixture[str],
    deferrable: bool,
    fail_on_warning: bool,
    state: str,
) -> None:
    result = run_flow(run_dag, flow_id="warning", deferrable=deferrable, fail_on_warning=fail_on_warning)
    assert result.states["generate"] == state
    if fail_on_warning:
        error = result.error("generate")
        assert isinstance(error, SmartFlowsExecutionError)
        assert "DeliveryWarning: E-mail could not be sent" in str(error)
    else:
        assert result.xcom("generate")["status"] == "Warning"
        assert "finished with a warning: DeliveryWarning" in capsys.readouterr().out


@pytest.mark.slow  # a dag.test() run
@MODES
def test_user_input_is_answered_once(run_dag: Any, smartflows_emulator: Any, deferrable: bool) -> None:
    result = run_flow(
        run_dag,
        flow_id="approval",
        deferrable=deferrable,
        user_input={"approved": True, "comment": "ok"},
    )
    assert result.states["generate"] == "success"
    execution_id = result.xcom("generate")["execution_id"]
    answers = smartflows_emulator.requests_to("POST", rf"/executions/{execution_id}/progress$")
    assert len(answers) == 1
    assert result.xcom("generate")["status"] == "Success"


@pytest.mark.slow  # a dag.test() run
@MODES
def test_user_input_without_answers_fails_listing_the_form_keys(
    run_dag: Any, smartflows_emulator: Any, deferrable: bool
) -> None:
    result = run_flow(run_dag, flow_id="approval", deferrable=deferrable)
    error = result.error("generate")
    assert isinstance(error, SmartFlowsExecutionError)
    assert "form's keys: approved, comment" in str(error)


@pytest.mark.slow  # a dag.test() run
def test_select_flow_fails_clearly(run_dag: Any, smartflows_emulator: Any) -> None:
    result = run_flow(run_dag, flow_id=None)
    error = result.error("generate")
    assert isinstance(error, SmartFlowsExecutionError)
    assert "SelectFlow" in str(error)
    assert "flow_id" in str(error)


@pytest.mark.slow  # a dag.test() run
@MODES
def test_timeout_cancels_the_execution(run_dag: Any, smartflows_emulator: Any, deferrable: bool) -> None:
    result = run_flow(run_dag, flow_id="signature", deferrable=deferrable, poll_interval=1, timeout=1.5)
    error = result.error("generate")
    assert isinstance(error, SmartFlowsTimeoutError)
    # The message names the timeout, the time waited and the parameter to raise.
    assert re.search(r"timeout=1\.5 s, waited \d+ s: raise the task's `timeout` parameter", str(error))
    execution_id = result.xcom("generate", "execution_id")
    assert len(smartflows_emulator.requests_to("DELETE", execution_id)) == 1
    assert [e["status"] for e in smartflows_emulator.executions] == ["Canceled"]


@pytest.mark.slow  # a dag.test() run
def test_timeout_leaves_the_execution_when_cancel_on_kill_is_off(
    run_dag: Any, smartflows_emulator: Any
) -> None:
    result = run_flow(run_dag, flow_id="signature", poll_interval=1, timeout=1.5, cancel_on_kill=False)
    assert isinstance(result.error("generate"), SmartFlowsTimeoutError)
    assert smartflows_emulator.requests_to("DELETE", "/flows/executions/") == []


@pytest.mark.slow  # a dag.test() run
@MODES
def test_unknown_status_fails_naming_it(run_dag: Any, smartflows_emulator: Any, deferrable: bool) -> None:
    result = run_flow(run_dag, flow_id="archived", deferrable=deferrable, poll_interval=1)
    error = result.error("generate")
    assert "'Archived'" in str(error)


@pytest.mark.slow  # a dag.test() run
def test_without_waiting_returns_right_after_the_start(run_dag: Any, smartflows_emulator: Any) -> None:
    result = run_flow(run_dag, flow_id="signature", wait_for_completion=False)
    value = result.xcom("generate")
    assert result.states["generate"] == "success"
    assert value["status"] in ("Queued", "Running", "Waiting")
    assert smartflows_emulator.requests_to("GET", "/progress") != []


@pytest.mark.slow  # a dag.test() run
@NEEDS_TASK_STATE_STORE
@MODES
def test_retry_reattaches_to_the_running_execution(
    run_dag: Any, smartflows_emulator: Any, deferrable: bool
) -> None:
    # The first try starts the execution, then loses its first progress call: the try fails.
    # The flow runs ~2 s, so the retry finds it still running.
    smartflows_emulator.set_speedup(10)
    smartflows_emulator.add_fault("status", status=401, method="GET", path="/progress$", times=1)
    result = run_flow(
        run_dag,
        flow_id="slow",
        deferrable=deferrable,
        retries=1,
        retry_delay=datetime.timedelta(seconds=0),
    )
    assert isinstance(result.errors["generate"][0], SmartFlowsAuthError)
    assert result.states["generate"] == "success"
    assert result.tries["generate"] == 2
    assert smartflows_emulator.executions_started() == 1
    value = result.xcom("generate")
    assert (value["execution_id"], value["status"]) == (smartflows_emulator.executions[0]["id"], "Success")


@pytest.mark.slow  # a dag.test() run
@NEEDS_TASK_STATE_STORE
def test_retry_after_success_returns_the_finished_execution(run_dag: Any, smartflows_emulator: Any) -> None:
    tries: list[int] = []

    def fail_first_try(context: Any, result: Any) -> None:
        tries.append(context["ti"].try_number)
        if context["ti"].try_number == 1:
            raise RuntimeError("the worker died after the execution finished")

    result = run_flow(
        run_dag,
        flow_id="hello",
        retries=1,
        retry_delay=datetime.timedelta(seconds=0),
        post_execute=fail_first_try,
    )
    assert result.states["generate"] == "success"
    assert tries == [1, 2]
    assert smartflows_emulator.executions_started() == 1
    value = result.xcom("generate")
    assert (value["execution_id"], value["status"]) == (smartflows_emulator.executions[0]["id"], "Success")
    assert len(value["document_ids"]) == 1


@pytest.mark.slow  # a dag.test() run
@pytest.mark.airflow_version(below="3.3", reason="Airflow >= 3.3 reattaches (the tests above)")
def test_retry_without_a_task_state_store_starts_a_new_execution_and_says_so(
    run_dag: Any, smartflows_emulator: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    smartflows_emulator.set_speedup(10)
    smartflows_emulator.add_fault("status", status=401, method="GET", path="/progress$", times=1)
    result = run_flow(run_dag, flow_id="slow", retries=1, retry_delay=datetime.timedelta(seconds=0))
    assert isinstance(result.errors["generate"][0], SmartFlowsAuthError)
    assert result.states["generate"] == "success"
    assert smartflows_emulator.executions_started("slow") == 2
    output = capsys.readouterr().out
    assert "Reattach unavailable" in output
    assert "try 2 starts a new Smart Flows execution" in output


@pytest.mark.slow  # a dag.test() run
def test_deferring_says_whether_a_kill_cancels_the_execution(
    run_dag: Any, smartflows_emulator: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    # The first check must see it running, so that it defers: at speed-up 10 the 3 s flow ended in
    # 0.3 s, before the first check of a loaded machine (no deferral, no warning: failed below 3.3).
    smartflows_emulator.set_speedup(1)
    result = run_flow(run_dag, flow_id="hello", deferrable=True, poll_interval=5)
    assert result.states["generate"] == "success"
    # Below Airflow 3.3 the triggerer never calls on_kill: the task log says so when it defers.
    said = "cancel_on_kill while deferred is unavailable" in capsys.readouterr().out
    assert said is not AIRFLOW_V_3_3_PLUS


@pytest.mark.slow  # a dag.test() run
def test_retry_after_a_failed_execution_starts_a_new_one(run_dag: Any, smartflows_emulator: Any) -> None:
    result = run_flow(run_dag, flow_id="flaky", retries=1, retry_delay=datetime.timedelta(seconds=0))
    assert isinstance(result.errors["generate"][0], SmartFlowsExecutionError)
    assert result.states["generate"] == "success"
    assert smartflows_emulator.executions_started("flaky") == 2


def test_bad_arguments_fail_before_any_request() -> None:
    with pytest.raises(SmartFlowsInputError, match="poll_interval"):
        SmartFlowsRunFlowOperator(task_id="t", flow_id="hello", poll_interval=0)
    with pytest.raises(SmartFlowsInputError, match="timeout"):
        SmartFlowsRunFlowOperator(task_id="t", flow_id="hello", timeout=-1)


def test_templated_fields() -> None:
    assert set(SmartFlowsRunFlowOperator.template_fields) == {
        "flow_id",
        "flow_name",
        "data",
        "dataset_id",
        "priority",
        "user_input",
    }

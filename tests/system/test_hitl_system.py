"""People answer Smart Flows forms in Airflow; the sensor starts in the triggerer (real services).

One stack (scheduler, triggerer, dag-processor, api-server) with the DAGs of ``hitl_dags/`` and
one emulator serve the module. A person is played by the public REST API: the test reads the
request (``GET .../hitlDetails``) and answers with ``PATCH .../hitlDetails``, the call the UI's
Required actions form makes.
"""

from __future__ import annotations

import json
import re
import statistics
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pendulum
import pytest

from airflow_provider_smartflows.human_input import ANSWER_OPTION, CLOSED_OPTION
from airflow_provider_smartflows.version_compat import AIRFLOW_V_3_3_PLUS
from tests.support.airflow_stack import AirflowStack, EmulatorProcess

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = [
    pytest.mark.slow,  # real Airflow services
    pytest.mark.serial,  # never beside the parallel pass of make test (one worker per system file)
    pytest.mark.system,
    pytest.mark.timeout(600),
    pytest.mark.skipif(
        not AIRFLOW_V_3_3_PLUS, reason="human-in-the-loop on a deferred task needs Airflow >= 3.3"
    ),
]

DAGS_FOLDER = Path(__file__).parent / "hitl_dags"
SCENARIO = Path(__file__).parent / "hitl_scenario.json"
TASK = "approve"
EXECUTION_IN_SUBJECT = re.compile(r"\(execution ([^)]+)\)")


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorProcess]:
    """The emulator in its own process at speed-up 1, with the flows of hitl_scenario.json."""
    emu = EmulatorProcess(tmp_path_factory.mktemp("emulator"), scenario=SCENARIO, speedup=1.0)
    try:
        yield emu
    finally:
        emu.stop()


@pytest.fixture(scope="module")
def stack(emulator: EmulatorProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AirflowStack]:
    airflow = AirflowStack(
        tmp_path_factory.mktemp("airflow-home"),
        DAGS_FOLDER,
        {"AIRFLOW_CONN_SMARTFLOWS_DEFAULT": json.dumps(emulator.connection())},
        extra_logs=[emulator.log_path],
    )
    try:
        airflow.start_all()
        yield airflow
    finally:
        airflow.stop_all()


# --- a person, through the public REST API ---------------------------------------------------------


def hitl_path(dag_id: str, run_id: str) -> str:
    return f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{TASK}/-1/hitlDetails"


def request_of(stack: AirflowStack, dag_id: str, run_id: str) -> dict[str, Any] | None:
    resp = stack.session.get(f"{stack.base_url}/api/v2{hitl_path(dag_id, run_id)}", timeout=60)
    return resp.json() if resp.ok else None


def required_actions(stack: AirflowStack) -> list[dict[str, Any]]:
    """What the Required actions page lists: requests without an answer, every DAG and run."""
    data = stack.api("GET", "/dags/~/dagRuns/~/hitlDetails", params={"response_received": "false"})
    return list(data["hitl_details"])


def answer(stack: AirflowStack, dag_id: str, run_id: str, params_input: dict[str, Any]) -> None:
    body = {"chosen_options": [ANSWER_OPTION], "params_input": params_input}
    stack.api("PATCH", hitl_path(dag_id, run_id), json=body)


def deferrals_settled(stack: AirflowStack, dag_id: str, run_id: str, ti_id: str) -> bool:
    """Whether the scheduler has seen the worker end after each time the task deferred.

    Airflow 3.3.2 fails a task resumed before that ("state changed externally",
    apache/airflow#72716). A person takes longer than that; a test answering at once does not.
    """
    deferred = task_log(stack, dag_id, run_id).count("Pausing task as DEFERRED")
    log = (stack.home / "scheduler.log").read_text(errors="replace")
    seen = sum(
        1
        for line in log.splitlines()
        if "TaskInstance Finished" in line and f"ti_id={ti_id}" in line and "state=deferred" in line
    )
    return deferred > 0 and seen >= deferred


def open_request(stack: AirflowStack, dag_id: str, run_id: str) -> dict[str, Any]:
    """Wait until the task waits for a person, deferred and settled; return the request."""

    def ready() -> dict[str, Any] | None:
        detail = request_of(stack, dag_id, run_id)
        if not detail or detail["response_received"] or detail["task_instance"]["state"] != "deferred":
            return None
        return detail if deferrals_settled(stack, dag_id, run_id, detail["task_instance"]["id"]) else None

    return stack.wait_for(ready, timeout=180, what=f"an open request in {dag_id}")


def task_instance(stack: AirflowStack, dag_id: str, run_id: str, task_id: str) -> dict[str, Any]:
    return next(ti for ti in stack.task_instances(dag_id, run_id) if ti["task_id"] == task_id)


def finish(stack: AirflowStack, dag_id: str, run_id: str) -> str:
    return stack.wait_for(
        lambda: (state := stack.dag_run_state(dag_id, run_id)) in ("success", "failed") and state,
        timeout=180,
        what=f"{dag_id} to finish",
    )


def task_log(stack: AirflowStack, dag_id: str, run_id: str, task_id: str = TASK) -> str:
    pattern = f"logs/dag_id={dag_id}/run_id={run_id}/task_id={task_id}/attempt=1.log"
    return "".join(stack.logs(pattern).values())


def execution_of(emulator: EmulatorProcess, request: dict[str, Any]) -> dict[str, Any]:
    match = EXECUTION_IN_SUBJECT.search(request["subject"])
    assert match, request["subject"]
    return next(ex for ex in emulator.admin("GET", "/_emulator/executions") if ex["id"] == match.group(1))


def start(stack: AirflowStack, dag_id: str) -> str:
    stack.wait_for_dag(dag_id)
    return stack.trigger(dag_id)


# --- tests -----------------------------------------------------------------------------------------


def test_a_person_answers_and_the_execution_completes_with_those_values(
    stack: AirflowStack, emulator: EmulatorProcess
) -> None:
    dag_id = "smartflows_hitl_answer"
    # Smart Flows refuses the first answer (a rule the form's schema cannot express).
    emulator.admin(
        "POST",
        "/_emulator/faults",
        json={
            "kind": "status",
            "status": 400,
            "method": "POST",
            "path": "/progress$",
            "times": 1,
            "body": "A rejection needs a comment",
        },
    )
    run_id = start(stack, dag_id)
    request = open_request(stack, dag_id, run_id)
    execution = execution_of(emulator, request)
    assert (
        request["subject"]
        == f"Smart Flows flow hitl-approval waits for your input (execution {execution['id']})"
    )
    assert f"[{execution['id']}](" in request["body"]
    assert "**Record:** account acc-42" in request["body"]
    assert request["options"] == [ANSWER_OPTION]
    assert {k: p["schema"]["type"] for k, p in request["params"].items()} == {
        "approved": "boolean",
        "comment": "string",
    }
    assert [
        (d["task_instance"]["dag_id"], d["task_instance"]["dag_run_id"]) for d in required_actions(stack)
    ] == [(dag_id, run_id)]

    answer(stack, dag_id, run_id, {"approved": False, "comment": ""})
    # Refused: the same request opens again (Airflow keeps one per task instance), reason in the log.
    open_request(stack, dag_id, run_id)
    assert "Smart Flows refused the answer of Anonymous: A rejection needs a comment" in task_log(
        stack, dag_id, run_id
    )

    answer(stack, dag_id, run_id, {"approved": True, "comment": "Approved by legal"})
    assert finish(stack, dag_id, run_id) == "success"
    execution = execution_of(emulator, request)
    assert execution["status"] == "Success"
    assert execution["answers"] == {"approved": True, "comment": "Approved by legal"}
    # The answer replaced the trigger, which Airflow cancels like a kill: it must not cancel the run.
    assert not emulator.requests_to("DELETE", execution["id"])
    assert required_actions(stack) == []


def test_nobody_answers_in_time(stack: AirflowStack, emulator: EmulatorProcess) -> None:
    dag_id = "smartflows_hitl_timeout"
    run_id = start(stack, dag_id)
    request = open_request(stack, dag_id, run_id)
    assert finish(stack, dag_id, run_id) == "failed"
    assert execution_of(emulator, request)["status"] == "Canceled"
    closed = request_of(stack, dag_id, run_id)
    assert closed
    assert closed["response_received"]
    assert closed["chosen_options"] == [CLOSED_OPTION]
    assert "Nobody answered the Smart Flows form" in task_log(stack, dag_id, run_id)
    assert all(d["task_instance"]["dag_id"] != dag_id for d in required_actions(stack))


def test_execution_cancelled_while_waiting_for_a_person(
    stack: AirflowStack, emulator: EmulatorProcess
) -> None:
    dag_id = "smartflows_hitl_cancel"
    run_id = start(stack, dag_id)
    request = open_request(stack, dag_id, run_id)
    execution_id = execution_of(emulator, request)["id"]
    emulator.api("DELETE", f"/flows/executions/{execution_id}/progress")
    assert finish(stack, dag_id, run_id) == "failed"
    closed = request_of(stack, dag_id, run_id)
    assert closed
    assert closed["chosen_options"] == [CLOSED_OPTION]
    assert "finished with status Canceled" in task_log(stack, dag_id, run_id)
    assert all(d["task_instance"]["dag_id"] != dag_id for d in required_actions(stack))


def _sensor_latency(stack: AirflowStack, dag_id: str) -> tuple[float, dict[str, Any]]:
    run_id = start(stack, dag_id)
    assert finish(stack, dag_id, run_id) == "success"
    upstream = task_instance(stack, dag_id, run_id, "start")
    sensor = task_instance(stack, dag_id, run_id, "wait")
    seconds = (pendulum.parse(sensor["end_date"]) - pendulum.parse(upstream["end_date"])).total_seconds()
    sensor["worker_log"] = bool(task_log(stack, dag_id, run_id, "wait"))
    return seconds, sensor


def test_sensor_starts_in_the_triggerer_and_never_runs_on_a_worker(stack: AirflowStack) -> None:
    timings: dict[str, list[float]] = {"from_trigger": [], "from_worker": []}
    for _ in range(3):
        seconds, sensor = _sensor_latency(stack, "smartflows_sensor_from_trigger")
        assert not sensor["hostname"], sensor  # no worker ever ran it
        assert not sensor["worker_log"]  # only the trigger's log exists for its try
        assert sensor["try_number"] == 1
        timings["from_trigger"].append(seconds)
        seconds, sensor = _sensor_latency(stack, "smartflows_sensor_from_worker")
        assert sensor["hostname"]
        assert sensor["worker_log"]
        timings["from_worker"].append(seconds)
    # A measurement, not a pass/fail bound (timings belong to benchmarks): shown with -s.
    print(
        "upstream success -> sensor success, median of 3 (s): "
        + ", ".join(
            f"{k} {statistics.median(v):.2f} {sorted(round(x, 2) for x in v)}" for k, v in timings.items()
        )
    )

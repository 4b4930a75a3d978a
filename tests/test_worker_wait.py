"""The worker-side wait resumes from every kind of event, including ones written without a kind.

A deferred task written by an older provider version resumes with the old event shapes (no
``kind``); Airflow's own answer event never has one. The operator runs outside a DAG here, against
the emulator, with a task instance that only keeps XComs.
"""

from __future__ import annotations

import ast
import time
from pathlib import Path
from typing import Any

import pytest

import airflow_provider_smartflows
from airflow_provider_smartflows.hooks.smartflows import SmartFlowsHook
from airflow_provider_smartflows.operators.smartflows import SmartFlowsRunFlowOperator

pytestmark = pytest.mark.usefixtures("smartflows_conn")

PACKAGE = Path(airflow_provider_smartflows.__file__).parent


class XComOnlyTI:
    """The part of a task instance the wait uses: XComs."""

    task_id = "generate"
    map_index = -1

    def __init__(self) -> None:
        self.xcoms: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.xcoms[key] = value

    def xcom_pull(self, task_ids: str, key: str, map_indexes: int) -> Any:
        return self.xcoms.get(key)


def operator() -> SmartFlowsRunFlowOperator:
    return SmartFlowsRunFlowOperator(task_id="generate", flow_id="approval", poll_interval=1, timeout=30)


def at_form() -> str:
    """Start the approval flow and wait (long-poll) until it asks for input."""
    hook = SmartFlowsHook(retry_limit=0)
    execution_id = hook.start_execution("approval").id
    deadline = time.monotonic() + 20
    while hook.get_progress(execution_id, wait_seconds=1).raw_status != "UserInput":
        assert time.monotonic() < deadline, "the flow never asked for input"
    return execution_id


def test_an_execution_event_without_a_kind_finishes_the_task(smartflows_emulator: Any) -> None:
    old_event = {
        "status": "success",
        "execution_id": "e-old",
        "execution_status": "Success",
        "message": "Smart Flows execution e-old finished with status Success",
        "document_ids": ["d1"],
        "end_time": None,
    }
    result = operator().execute_complete({"ti": XComOnlyTI()}, old_event)
    assert (result["execution_id"], result["status"], result["document_ids"]) == ("e-old", "Success", ["d1"])
    # The event carries the outcome; only the named outputs are read (this execution is unknown to
    # the emulator: the result has none, the task still succeeds).
    reads = smartflows_emulator.requests_to("GET", "/flows/executions/")
    assert [r["path"] for r in reads] == ["/api/v1/flows/executions/e-old"]
    assert result["outputs"] == {}


def test_a_human_wait_event_without_a_kind_waits_on(smartflows_emulator: Any) -> None:
    smartflows_emulator.set_speedup(10)
    execution_id = at_form()
    SmartFlowsHook(retry_limit=0).answer_user_input(execution_id, {"approved": True, "comment": "in SF"})
    old_event = {"execution_id": execution_id, "execution": None, "message": "left the form: answered there"}
    result = operator().resume_after_person({"ti": XComOnlyTI()}, old_event, execution_id, time.time() + 30)
    assert (result["execution_id"], result["status"]) == (execution_id, "Success")


def test_an_answer_after_the_form_was_left_is_not_posted(smartflows_emulator: Any) -> None:
    smartflows_emulator.set_speedup(10)
    execution_id = at_form()
    SmartFlowsHook(retry_limit=0).answer_user_input(execution_id, {"approved": True, "comment": "in SF"})
    ti = XComOnlyTI()
    ti.xcom_push("execution_id", execution_id)
    answer = {"chosen_options": ["Submit to Smart Flows"], "params_input": {"approved": False}}
    # Delivered to the other resume method and without kwargs: the execution id comes from XCom.
    result = operator().execute_complete({"ti": ti}, answer)
    assert (result["execution_id"], result["status"]) == (execution_id, "Success")
    assert len(smartflows_emulator.requests_to("POST", rf"/executions/{execution_id}/progress$")) == 1


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}


def test_the_sensor_imports_the_waiting_home_not_the_operators() -> None:
    imported = _imports(PACKAGE / "sensors" / "smartflows.py")
    assert "airflow_provider_smartflows.worker_wait" in imported
    assert not {name for name in imported if name.startswith("airflow_provider_smartflows.operators")}

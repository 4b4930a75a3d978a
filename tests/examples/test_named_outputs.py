"""smartflows_named_outputs: a flow by name, the prompt-free start, an output read downstream."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from tests.examples.example_helpers import ExampleRun, load_example, run_example

if TYPE_CHECKING:
    from airflow_provider_smartflows.emulator import EmulatorServer

pytestmark = pytest.mark.slow  # an example DAG run


@pytest.fixture(scope="module")
def run(airflow_db: None, emulator_conn: EmulatorServer) -> ExampleRun:
    return run_example(load_example("smartflows_named_outputs").dag, emulator_conn)


def test_both_tasks_succeed(run: ExampleRun) -> None:
    assert run.states == {"generate": "success", "decision": "success"}


def test_the_name_resolved_and_the_start_skipped_the_prompt(run: ExampleRun) -> None:
    result = run.xcom("generate")
    assert (result["flow_id"], result["flow_name"], result["status"]) == ("approval", "Approval", "Success")
    (execution,) = run.executions
    assert execution["answers"] == {}


def test_the_downstream_task_read_the_output(run: ExampleRun) -> None:
    assert run.xcom("decision") == "approved"

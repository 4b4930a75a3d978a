"""smartflows_retries_and_alerts: a retry after Error, alerts from the callbacks, fail_on_warning."""

from __future__ import annotations

import datetime
import json
from typing import TYPE_CHECKING, Any

import pytest

from airflow_provider_smartflows.exceptions import SmartFlowsExecutionError
from tests.examples.example_helpers import ExampleRun, load_example, run_example

if TYPE_CHECKING:
    from pathlib import Path

    from airflow_provider_smartflows.emulator import EmulatorServer

LOGICAL_DATE = datetime.datetime(2024, 7, 1, tzinfo=datetime.timezone.utc)


@pytest.fixture(scope="module")
def alert_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("alerts") / "alerts.jsonl"


@pytest.fixture(scope="module")
def module() -> Any:
    return load_example("smartflows_retries_and_alerts")


@pytest.fixture(scope="module")
def run(airflow_db: None, emulator_conn: EmulatorServer, module: Any, alert_file: Path) -> ExampleRun:
    # The example waits 10-20 s before its first retry; the test keeps the back-off, not the wait.
    for task in module.dag.tasks:
        task.retry_delay = datetime.timedelta(0)
    return run_example(
        module.dag, emulator_conn, logical_date=LOGICAL_DATE, run_conf={"alert_file": str(alert_file)}
    )


# Airflow 3.0's dag.test() keeps a deferred try's next_method/next_kwargs on the task instance: the
# retry resumes in execute_complete with the failed try's event instead of starting again, so the
# flaky task took 4 tries instead of 2 (seen on 3.0.6, not on 3.3).
pytestmark = [
    pytest.mark.slow,  # a DAG run that waits out real retry delays
    pytest.mark.airflow_version(
        not_line="3.0",
        reason="Airflow 3.0's dag.test() resumes a retried task from the previous try's deferral event",
    ),
]


NO_EXCEPTION_IN_DAG_TEST = pytest.mark.airflow_version(
    not_line="3.0",
    reason="Airflow 3.0's dag.test() runs the callbacks without `exception` in their context "
    "(a scheduled run has it), so the alert's error is None",
)


def alerts(alert_file: Path, task_id: str) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in alert_file.read_text().splitlines()]
    return [alert for alert in lines if alert["task_id"] == task_id]


def test_retry_delays_double_up_to_the_cap(run: ExampleRun) -> None:
    """Airflow's own scheduler arithmetic on the example's untouched settings: 10-20 s, 20-40 s..."""
    try:
        from airflow.serialization.serialized_objects import DagSerialization  # Airflow >= 3.1
    except ImportError:
        from airflow.serialization.serialized_objects import SerializedDAG as DagSerialization

    fresh = load_example("smartflows_retries_and_alerts").dag
    task = DagSerialization.deserialize_dag(DagSerialization.serialize_dag(fresh)).get_task("flaky_flow")
    assert task.retries == 3
    (ti,) = [ti for ti in run.dag_run.get_task_instances() if ti.task_id == "flaky_flow"]
    ti.task = task
    delays = []
    for try_number in (1, 2, 3, 6):
        ti.try_number = try_number
        delays.append((ti.next_retry_datetime() - ti.end_date).total_seconds())
    low = [10, 20, 40]
    assert [lo <= d < 2 * lo for lo, d in zip(low, delays[:3], strict=True)] == [True] * 3, delays
    assert delays[3] == 300  # max_retry_delay


def test_the_run_ends_green_after_alerting(run: ExampleRun) -> None:
    assert run.dag_run.state == "success"
    assert run.states == {
        "flaky_flow": "success",
        "lenient_on_warning": "success",
        "strict_on_warning": "failed",
        "report": "success",
    }


def test_flaky_flow_succeeds_on_its_second_try_with_a_new_execution(run: ExampleRun) -> None:
    assert run.tries["flaky_flow"] == 2
    flaky = [e for e in run.executions if e["flow_id"] == "flaky"]
    # Oldest first: the first execution failed, so the retry started a new one (not reattached).
    assert [e["status"] for e in sorted(flaky, key=lambda e: e["created_at"])] == ["Error", "Success"]
    assert run.xcom("flaky_flow")["execution_id"] == max(flaky, key=lambda e: e["created_at"])["id"]


def test_first_try_failed_with_the_flows_error(run: ExampleRun) -> None:
    with pytest.raises(SmartFlowsExecutionError, match="Simulated failure"):
        raise run.error("flaky_flow")


def test_the_retry_was_alerted_and_nothing_else_for_flaky(run: ExampleRun, alert_file: Path) -> None:
    (alert,) = alerts(alert_file, "flaky_flow")
    assert (alert["event"], alert["try_number"]) == ("retry", 1)
    assert alert["execution_url"]


@NO_EXCEPTION_IN_DAG_TEST
def test_the_retry_alert_names_the_flows_error(run: ExampleRun, alert_file: Path) -> None:
    (alert,) = alerts(alert_file, "flaky_flow")
    assert "Simulated failure" in alert["error"]


def test_fail_on_warning_fails_with_the_warning_text(run: ExampleRun) -> None:
    with pytest.raises(SmartFlowsExecutionError, match="E-mail could not be sent"):
        raise run.error("strict_on_warning")


def test_fail_on_warning_failure_is_alerted_once(run: ExampleRun, alert_file: Path) -> None:
    (alert,) = alerts(alert_file, "strict_on_warning")
    assert (alert["event"], alert["try_number"]) == ("failed", 1)


@NO_EXCEPTION_IN_DAG_TEST
def test_fail_on_warning_alert_names_the_warning(run: ExampleRun, alert_file: Path) -> None:
    (alert,) = alerts(alert_file, "strict_on_warning")
    assert "E-mail could not be sent" in alert["error"]


def test_a_warning_is_not_retried(run: ExampleRun, module: Any) -> None:
    assert module.dag.get_task("strict_on_warning").retries == 0
    assert run.tries["strict_on_warning"] == 1
    assert sum(e["flow_id"] == "warning" for e in run.executions) == 2  # lenient + strict


def test_lenient_task_succeeds_with_the_warning_status(run: ExampleRun, alert_file: Path) -> None:
    assert run.xcom("lenient_on_warning")["status"] == "Warning"
    assert alerts(alert_file, "lenient_on_warning") == []


def test_report_lists_each_outcome(run: ExampleRun) -> None:
    assert run.xcom("report") == {
        "flaky_flow": "Success",
        "lenient_on_warning": "Warning",
        "strict_on_warning": None,
    }

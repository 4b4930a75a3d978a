"""The batch's ambiguous starts: adopted, started again once, or ``unknown``, never twice."""

from __future__ import annotations

import datetime
from typing import TYPE_CHECKING, Any

import pytest

from tests.operators.batch.batch_helpers import (
    DYNAMICS,
    MODES,
    customers,
    manifest,
    run_batch,
    starts_by_account,
)

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("smartflows_conn")]  # dag.test() runs


AMBIGUOUS = {
    # The server creates the second record's execution, then the connection drops: adopted.
    "created-then-reset": {"kind": "reset", "when": "after"},
    "created-then-500": {"kind": "status", "status": 500, "when": "after"},
    # The connection drops before the server creates anything: the listing proves it, started again.
    "reset-before": {"kind": "reset", "when": "before"},
}


@pytest.mark.parametrize("fault", list(AMBIGUOUS.values()), ids=list(AMBIGUOUS))
@MODES
def test_an_ambiguous_start_is_reconciled_to_exactly_one_execution(
    run_dag: Any, smartflows_emulator: Any, tmp_path: Path, deferrable: bool, fault: dict[str, Any]
) -> None:
    fault = dict(fault)
    smartflows_emulator.add_fault(
        fault.pop("kind"), method="POST", path="/flows/executions$", after=1, times=1, **fault
    )
    result = run_batch(
        run_dag,
        tmp_path,
        records=customers(3),
        data_template=DYNAMICS,
        max_active=2,
        deferrable=deferrable,
        reconcile_settle_time=0.2,
    )
    assert result.states["batch"] == "success"
    assert starts_by_account(smartflows_emulator) == {"acc-1": 1, "acc-2": 1, "acc-3": 1}
    lines = {line["key"]: line for line in manifest(tmp_path)}
    assert {key: line["status"] for key, line in lines.items()} == dict.fromkeys("123", "succeeded")
    (execution,) = [e for e in smartflows_emulator.executions if e["input_data"]["id"] == ["acc-2"]]
    assert lines["2"]["execution_id"] == execution["id"]
    # Three POSTs answered, plus the ambiguous one.
    assert len(smartflows_emulator.requests_to("POST", "/flows/executions$")) == (
        3 if fault.get("when") == "after" else 4
    )


def test_an_ambiguous_start_that_cannot_be_told_is_unknown_and_not_started_again(
    run_dag: Any, smartflows_emulator: Any, tmp_path: Path
) -> None:
    smartflows_emulator.add_fault(
        "reset", method="POST", path="/flows/executions$", after=1, times=1, when="after"
    )
    # The key may not list the flow's executions: nothing can be proven.
    smartflows_emulator.add_fault(
        "status", status=403, method="GET", path="/flows/[^/]+/executions", times=10
    )
    result = run_batch(run_dag, tmp_path, records=customers(3), data_template=DYNAMICS, max_active=1)
    assert result.states["batch"] == "failed"
    assert "1 of them unknown" in str(result.error("batch"))
    assert starts_by_account(smartflows_emulator) == {"acc-1": 1, "acc-2": 1, "acc-3": 1}
    lines = {line["key"]: line for line in manifest(tmp_path)}
    assert (lines["2"]["status"], lines["2"]["execution_id"]) == ("unknown", None)
    assert "may have created an execution" in lines["2"]["messages"][0]
    assert "could not tell whether it was created" in lines["2"]["messages"][0]
    assert lines["1"]["status"] == lines["3"]["status"] == "succeeded"


def test_reconciliation_off_marks_an_ambiguous_start_unknown(
    run_dag: Any, smartflows_emulator: Any, tmp_path: Path
) -> None:
    smartflows_emulator.add_fault("reset", method="POST", path="/flows/executions$", after=1, times=1)
    result = run_batch(
        run_dag,
        tmp_path,
        records=customers(3),
        data_template=DYNAMICS,
        max_active=1,
        reconcile_ambiguous_start=False,
    )
    assert result.states["batch"] == "failed"
    lines = {line["key"]: line for line in manifest(tmp_path)}
    assert lines["2"]["status"] == "unknown"
    assert smartflows_emulator.requests_to("GET", "/flows/[^/]+/executions") == []
    assert starts_by_account(smartflows_emulator) == {"acc-1": 1, "acc-3": 1}


def test_a_second_ambiguous_start_of_a_record_is_unknown(
    run_dag: Any, smartflows_emulator: Any, tmp_path: Path
) -> None:
    # Both starts of record 2 reset before the server created anything: started again once, no third.
    smartflows_emulator.add_fault("reset", method="POST", path="/flows/executions$", after=1, times=2)
    result = run_batch(
        run_dag,
        tmp_path,
        records=customers(3),
        data_template=DYNAMICS,
        max_active=1,
        reconcile_settle_time=0.2,
    )
    assert result.states["batch"] == "failed"
    lines = {line["key"]: line for line in manifest(tmp_path)}
    assert lines["2"]["status"] == "unknown"
    assert "second start" in lines["2"]["messages"][0]
    assert len(smartflows_emulator.requests_to("POST", "/flows/executions$")) == 4
    assert starts_by_account(smartflows_emulator) == {"acc-1": 1, "acc-3": 1}


@pytest.mark.airflow_version(
    min="3.0",
    reason="Airflow 2's dag.test() lets a task's execution_timeout escape the run instead of retrying the task",
)
def test_a_record_caught_mid_start_by_a_crash_is_reconciled_on_resume(
    run_dag: Any, smartflows_emulator: Any, tmp_path: Path
) -> None:
    # The third start takes 5 s to answer; the try's execution_timeout (4 s) interrupts it after it was
    # sent. The retry finds it mid-start and looks for it; its settle time (2 s) outlasts the server.
    smartflows_emulator.add_fault(
        "latency", latency=5, method="POST", path="/flows/executions$", after=2, times=1
    )
    result = run_batch(
        run_dag,
        tmp_path,
        records=customers(4),
        data_template=DYNAMICS,
        max_active=4,
        execution_timeout=datetime.timedelta(seconds=4),
        retries=1,
        retry_delay=datetime.timedelta(seconds=0),
        cancel_on_kill=False,
        reconcile_settle_time=2,
    )
    assert result.tries["batch"] == 2
    assert result.states["batch"] == "success"
    smartflows_emulator.wait_deferred()  # a late creation of record 3's execution would count too
    lines = {line["key"]: line for line in manifest(tmp_path)}
    # Record 3 was adopted (or proven not created and started again); record 4 was not sent before
    # the interruption: the retry started it. Each record ran exactly once.
    assert {key: line["status"] for key, line in lines.items()} == dict.fromkeys("1234", "succeeded")
    assert starts_by_account(smartflows_emulator) == {"acc-1": 1, "acc-2": 1, "acc-3": 1, "acc-4": 1}

"""The batch engine's loop: concurrency, outcomes, record retries, the failure limit, back-off."""

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


def test_concurrency_never_above_max_active(run_dag: Any, smartflows_emulator: Any, tmp_path: Path) -> None:
    # Each execution runs 0.5 s of emulated... 25 virtual s at the fixtures' speed-up of 50.
    smartflows_emulator.add_flow(
        {"id": "steady", "input": "any", "steps": [{"message": "Working", "percentage": 50, "seconds": 25}]}
    )
    result = run_batch(
        run_dag,
        tmp_path,
        flow_id="steady",
        records=customers(12),
        data_template=DYNAMICS,
        max_active=4,
        deferrable=True,
    )
    assert result.states["batch"] == "success"

    def parse(text: str) -> float:
        return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()

    created = sorted(parse(e["created_at"]) for e in smartflows_emulator.executions)
    assert len(created) == 12
    # An execution runs 0.5 s: at each start, count those started less than 0.5 s before it.
    overlapping = [sum(1 for other in created if start - 0.5 < other <= start) for start in created]
    assert max(overlapping) == 4


@MODES
def test_failed_records_are_retried_then_reported(
    run_dag: Any, smartflows_emulator: Any, tmp_path: Path, deferrable: bool
) -> None:
    result = run_batch(
        run_dag,
        tmp_path,
        flow_id="error",
        records=customers(3),
        data_template=DYNAMICS,
        record_retries=1,
        deferrable=deferrable,
    )
    assert result.states["batch"] == "failed"
    error = result.error("batch")
    assert "3 of 3 records failed" in str(error)
    assert f"file://{tmp_path}/out/manifest.jsonl" in str(error)
    assert starts_by_account(smartflows_emulator) == {"acc-1": 2, "acc-2": 2, "acc-3": 2}
    assert result.tries["batch"] == 1  # not retried by Airflow: the verdict would not change
    for line in manifest(tmp_path):
        assert line["status"] == "failed"
        assert line["execution_status"] == "Error"
        assert line["attempts"] == 2
        assert "TemplateError: Field CustomerName missing in data set" in line["messages"][0]
        (previous,) = line["previous_attempts"]
        assert previous["execution_status"] == "Error"
        assert previous["execution_id"] != line["execution_id"]


def test_a_retried_record_succeeds_and_failures_within_the_limit_pass(
    run_dag: Any, smartflows_emulator: Any, tmp_path: Path
) -> None:
    # flaky: its first execution ends Error, later ones succeed.
    result = run_batch(
        run_dag,
        tmp_path,
        flow_id="flaky",
        records=customers(3),
        data_template=DYNAMICS,
        max_active=1,
        deferrable=True,
    )
    assert result.states["batch"] == "success"
    assert sorted(starts_by_account(smartflows_emulator).values()) == [1, 1, 2]
    lines = {line["key"]: line for line in manifest(tmp_path)}
    assert lines["1"]["attempts"] == 2
    assert lines["1"]["previous_attempts"][0]["messages"] == [
        "FlowExecutionError: Simulated failure (fail_first)"
    ]
    assert {line["status"] for line in lines.values()} == {"succeeded"}


def test_failures_within_max_failed_records_pass(
    run_dag: Any, smartflows_emulator: Any, tmp_path: Path
) -> None:
    result = run_batch(
        run_dag,
        tmp_path,
        flow_id="error",
        records=customers(2),
        data_template=DYNAMICS,
        record_retries=0,
        max_failed_records=1.0,
    )
    assert result.states["batch"] == "success"
    summary = result.xcom("batch")
    assert (summary["failed"], summary["succeeded"], summary["executions"]) == (2, 0, 2)


def test_a_server_asking_to_slow_down_delays_starts_instead_of_failing(
    run_dag: Any, smartflows_emulator: Any, tmp_path: Path
) -> None:
    # Five 429s in a row: more than the hook's own retries (3) for the second start.
    smartflows_emulator.add_fault(
        "status", status=429, retry_after=0, method="POST", path="/flows/executions$", after=1, times=5
    )
    result = run_batch(run_dag, tmp_path, records=customers(3), data_template=DYNAMICS, deferrable=True)
    assert result.states["batch"] == "success"
    assert starts_by_account(smartflows_emulator) == {"acc-1": 1, "acc-2": 1, "acc-3": 1}
    assert len(smartflows_emulator.requests_to("POST", "/flows/executions$")) == 3 + 5

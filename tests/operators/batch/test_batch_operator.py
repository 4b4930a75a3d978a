"""SmartFlowsRunFlowBatchOperator with real Airflow (``dag.test()``) against the emulator: its
entry points in both modes, its checkpoint's owner, its arguments."""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

import pytest

from airflow_provider_smartflows.exceptions import SmartFlowsInputError
from airflow_provider_smartflows.operators.batch import SmartFlowsRunFlowBatchOperator
from airflow_provider_smartflows.validation import parse_priority
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

pytestmark = pytest.mark.usefixtures("smartflows_conn")


@pytest.mark.slow  # a dag.test() run
@MODES
def test_one_execution_per_record_with_documents_and_manifest(
    run_dag: Any, smartflows_emulator: Any, tmp_path: Path, deferrable: bool
) -> None:
    records = customers(7)
    result = run_batch(
        run_dag,
        tmp_path,
        records=records,
        record_key="customer_id",
        data_template=DYNAMICS,
        destination=f"file://{tmp_path}/docs/{{{{ ds }}}}/{{record[customer_id]}}.pdf",
        max_active=3,
        deferrable=deferrable,
    )
    assert result.states["batch"] == "success"
    assert starts_by_account(smartflows_emulator) == {r["account"]: 1 for r in records}
    summary = result.xcom("batch")
    assert {
        k: summary[k]
        for k in ("total", "succeeded", "failed", "unknown", "executions", "documents", "skipped_documents")
    } == {
        "total": 7,
        "succeeded": 7,
        "failed": 0,
        "unknown": 0,
        "executions": 7,
        "documents": 7,
        "skipped_documents": 0,
    }
    assert summary["manifest"] == f"file://{tmp_path}/out/manifest.jsonl"
    lines = manifest(tmp_path)
    assert [line["key"] for line in sorted(lines, key=lambda x: x["line"])] == [
        r["customer_id"] for r in records
    ]
    by_id = {e["id"]: e for e in smartflows_emulator.executions}
    for line in lines:
        execution = by_id[line["execution_id"]]
        assert line["status"] == "succeeded"
        assert line["execution_status"] == "Success"
        assert execution["input_data"] == {"entity": "account", "id": [f"acc-{line['line']}"]}
        (document,) = line["documents"]
        assert document["document_id"] == execution["documents"][0]
        path = document["uri"].removeprefix("file://")
        assert path.endswith(f"/docs/{result.dag_run.logical_date:%Y-%m-%d}/{line['key']}.pdf")
        with open(path, "rb") as handle:
            data = handle.read()
        assert document["size"] == len(data)
        assert document["sha256"] == hashlib.sha256(data).hexdigest()
        assert document["sha256"] == smartflows_emulator.document_sha256(document["document_id"])


@pytest.mark.slow  # a dag.test() run
def test_a_completed_batch_runs_nothing_again(run_dag: Any, smartflows_emulator: Any, tmp_path: Path) -> None:
    from tests.support.dag_runs import make_dag

    def build() -> None:
        for task_id in ("first", "again"):
            SmartFlowsRunFlowBatchOperator(
                task_id=task_id,
                flow_id="invoice",
                records=customers(3),
                data_template=DYNAMICS,
                manifest_uri=f"file://{tmp_path}/out/manifest.jsonl",
                gather_seconds=0.1,
            )

    dag = make_dag("batch_twice", build)
    dag.get_task("first") >> dag.get_task("again")
    result = run_dag(dag)
    # The second task is another owner: it refuses the first one's checkpoint before starting anything.
    assert result.states == {"first": "success", "again": "failed"}
    assert "belongs to" in str(result.error("again"))
    assert len(smartflows_emulator.executions) == 3


@pytest.mark.slow  # a dag.test() run
def test_a_templated_priority_is_sent_as_a_number(
    run_dag: Any, smartflows_emulator: Any, tmp_path: Path
) -> None:
    result = run_batch(
        run_dag, tmp_path, records=customers(2), data_template=DYNAMICS, priority="{{ 3 + 4 }}"
    )
    assert result.states["batch"] == "success"
    requests = smartflows_emulator.requests_to("POST", "/flows/executions$")
    assert [request["query"]["priority"] for request in requests] == ["7", "7"]


@pytest.mark.slow  # a dag.test() run
def test_a_priority_that_is_no_number_fails_before_anything_starts(
    run_dag: Any, smartflows_emulator: Any, tmp_path: Path
) -> None:
    result = run_batch(run_dag, tmp_path, records=customers(2), data_template=DYNAMICS, priority="high")
    assert result.states["batch"] == "failed"
    assert "priority must be an integer (or the text of one), not 'high'" in str(result.error("batch"))
    assert smartflows_emulator.executions == []


BAD_ARGUMENTS = {
    "max_active-zero": ({"max_active": 0}, "max_active must be an integer >= 1, not 0"),
    "max_active-bool": ({"max_active": True}, "max_active must be an integer >= 1, not True"),
    "record_retries-negative": ({"record_retries": -1}, "record_retries must be an integer >= 0"),
    "download_concurrency-text": ({"download_concurrency": "4"}, "download_concurrency must be an integer"),
    "records-and-uri": ({"records_uri": "file:///r.jsonl"}, "Give exactly one of records"),
    "both-templates": ({"xml_template": "<a/>"}, "Give data_template .* or xml_template"),
    "max_failed_records-negative": (
        {"max_failed_records": -1},
        "max_failed_records must be a count or a fraction >= 0",
    ),
    "max_starts_per_second-zero": ({"max_starts_per_second": 0}, "max_starts_per_second must be .*> 0"),
    "poll_interval-zero": ({"poll_interval": 0}, "poll_interval must be a number of seconds > 0"),
    "gather_seconds-negative": ({"gather_seconds": -1}, "gather_seconds must be a number of seconds >= 0"),
    "reconcile_clock_skew-negative": ({"reconcile_clock_skew": -1}, "reconcile_clock_skew must be"),
    "reconcile_settle_time-text": ({"reconcile_settle_time": "10"}, "reconcile_settle_time must be"),
    "timeout-zero": ({"timeout": 0}, "timeout must be a number of seconds > 0 or None"),
}


@pytest.mark.parametrize(("kwargs", "match"), list(BAD_ARGUMENTS.values()), ids=list(BAD_ARGUMENTS))
def test_bad_arguments_are_refused_when_the_dag_is_parsed(kwargs: dict[str, Any], match: str) -> None:
    kwargs = {"records": customers(1), "data_template": DYNAMICS, **kwargs}
    with pytest.raises(SmartFlowsInputError, match=match):
        SmartFlowsRunFlowBatchOperator(
            task_id="t", flow_id="invoice", manifest_uri="file:///m.jsonl", **kwargs
        )


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, None), (5, 5), (-2, -2), ("7", 7), (" -3 ", -3)],
    ids=["none", "int", "negative", "text", "padded-text"],
)
def test_parse_priority_accepts_an_int_or_its_text(value: object, expected: int | None) -> None:
    assert parse_priority(value) == expected


@pytest.mark.parametrize("value", ["high", "", "--5", "5.0", 5.0, True], ids=repr)
def test_parse_priority_refuses_anything_else(value: object) -> None:
    with pytest.raises(SmartFlowsInputError, match="priority must be an integer"):
        parse_priority(value)

"""The batch's document selection (content_types=, name_pattern=) and expiry, with real Airflow
(``dag.test()``) against the emulator, writing local files."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from airflow_provider_smartflows.exceptions import SmartFlowsInputError
from airflow_provider_smartflows.operators.batch import SmartFlowsRunFlowBatchOperator
from tests.operators.batch.batch_helpers import DYNAMICS, customers, manifest, run_batch

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.usefixtures("smartflows_conn")

DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
PACK = {
    "id": "t-pack",
    "steps": [{"message": "Rendering", "percentage": 50, "seconds": 0.01}],
    "documents": [
        {"displayName": "Invoice"},
        {"displayName": "Invoice", "contentType": DOCX},
        {"displayName": "Terms"},
    ],
}


@pytest.mark.slow  # a dag.test() run
def test_the_selection_chooses_what_each_record_writes(
    run_dag: Any, smartflows_emulator: Any, tmp_path: Path
) -> None:
    smartflows_emulator.add_flow(PACK)
    result = run_batch(
        run_dag,
        tmp_path,
        flow_id="t-pack",
        records=customers(2),
        record_key="customer_id",
        data_template=DYNAMICS,
        destination=f"file://{tmp_path}/docs/{{record[customer_id]}}/",
        content_types=["application/pdf"],
        name_pattern="INVOICE*",
    )
    assert result.states["batch"] == "success"
    summary = result.xcom("batch")
    assert (summary["documents"], summary["skipped_documents"]) == (2, 4)
    for line in manifest(tmp_path):
        assert [d["uri"].rsplit("/", 1)[1] for d in line["documents"]] == ["Invoice.pdf"]
        assert sorted((s["display_name"], s["content_type"]) for s in line["skipped_documents"]) == [
            ("Invoice", DOCX),
            ("Terms", "application/pdf"),
        ]
        assert sorted(p.name for p in (tmp_path / "docs" / line["key"]).iterdir()) == ["Invoice.pdf"]


@pytest.mark.slow  # a dag.test() run
def test_expired_documents_fail_their_record_with_nothing_written(
    run_dag: Any, smartflows_emulator: Any, tmp_path: Path
) -> None:
    smartflows_emulator.add_flow(PACK)
    smartflows_emulator.set_document_retention(0)  # expired as soon as made
    result = run_batch(
        run_dag,
        tmp_path,
        flow_id="t-pack",
        records=customers(1),
        record_key="customer_id",
        data_template=DYNAMICS,
        destination=f"file://{tmp_path}/docs/{{record[customer_id]}}.pdf",
        record_retries=0,
    )
    assert result.states["batch"] == "failed"
    (line,) = manifest(tmp_path)
    assert line["status"] == "failed"
    assert "expired at" in line["messages"][0]
    assert not (tmp_path / "docs").exists() or not any((tmp_path / "docs").iterdir())
    assert not smartflows_emulator.requests_to("GET", r"/documents/[^/]+/content$")


def test_a_selection_needs_a_destination(tmp_path: Path) -> None:
    with pytest.raises(SmartFlowsInputError, match="give destination too"):
        SmartFlowsRunFlowBatchOperator(
            task_id="b",
            flow_id="f",
            manifest_uri=f"file://{tmp_path}/m.jsonl",
            records=[],
            content_types=[DOCX],
        )


def test_a_bad_content_type_is_refused_at_construction(tmp_path: Path) -> None:
    with pytest.raises(SmartFlowsInputError, match="is not a content type"):
        SmartFlowsRunFlowBatchOperator(
            task_id="b",
            flow_id="f",
            manifest_uri=f"file://{tmp_path}/m.jsonl",
            records=[],
            destination=f"file://{tmp_path}/d/",
            content_types=["pdf"],
        )

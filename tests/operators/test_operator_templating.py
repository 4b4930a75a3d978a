"""Templated inputs a DAG author relies on: XML from a template file, templated storage connection,
and a folder given as an ``ObjectStoragePath``."""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

import pytest
from airflow.providers.common.compat.sdk import ObjectStoragePath

from airflow_provider_smartflows.operators.smartflows import (
    SmartFlowsDownloadDocumentsOperator,
    SmartFlowsRunFlowOperator,
)
from tests.support.dag_runs import make_dag

if TYPE_CHECKING:
    from pathlib import Path

EXECUTION_ID = "{{ ti.xcom_pull(task_ids='generate')['execution_id'] }}"


@pytest.mark.slow  # a dag.test() run
def test_xml_data_is_rendered_from_a_template_file(
    run_dag: Any, smartflows_emulator: Any, smartflows_conn: str, tmp_path: Path
) -> None:
    (tmp_path / "letter.xml.j2").write_text("<letter><to>{{ params.to | e }}</to></letter>")

    def build() -> None:
        SmartFlowsRunFlowOperator(
            task_id="generate", flow_id="xml-letter", data="letter.xml.j2", poll_interval=2
        )

    dag = make_dag("xml_template", build, template_searchpath=[str(tmp_path)], params={"to": "Ann & Bob"})
    result = run_dag(dag)

    assert result.states == {"generate": "success"}
    (execution,) = smartflows_emulator.executions
    assert execution["input_kind"] == "xml"
    (post,) = smartflows_emulator.requests_to("POST", r"/flows/executions$")
    assert post["body_bytes"] == len(b"<letter><to>Ann &amp; Bob</to></letter>")


@pytest.mark.slow  # a dag.test() run
def test_folder_given_as_a_path_object(
    run_dag: Any, smartflows_emulator: Any, smartflows_conn: str, tmp_path: Path
) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()

    def build() -> None:
        generate = SmartFlowsRunFlowOperator(task_id="generate", flow_id="multi-docs", poll_interval=2)
        download = SmartFlowsDownloadDocumentsOperator(
            task_id="download",
            execution_id=EXECUTION_ID,
            # An existing folder given as a path object (which has no trailing "/").
            destination=ObjectStoragePath(f"file://{folder}"),
        )
        generate >> download

    result = run_dag(make_dag("folder_path", build))

    assert result.states == {"generate": "success", "download": "success"}
    written = sorted(p.name for p in folder.iterdir())
    assert written == ["Report (2).pdf", "Report.docx", "Report.pdf"]
    digests = {hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir()}
    expected = {smartflows_emulator.document_sha256(d) for d in result.xcom("generate")["document_ids"]}
    assert digests == expected


def test_destination_and_its_connection_are_templated() -> None:
    download = SmartFlowsDownloadDocumentsOperator(
        task_id="download",
        execution_id="e1",
        destination="s3://{{ params.bucket }}/{{ ds }}/",
        destination_conn_id="{{ params.storage_conn }}",
    )
    download.render_template_fields(
        {"params": {"bucket": "docs", "storage_conn": "aws_docs"}, "ds": "2025-01-02"}  # type: ignore[arg-type]
    )
    assert (download.destination, download.destination_conn_id) == ("s3://docs/2025-01-02/", "aws_docs")

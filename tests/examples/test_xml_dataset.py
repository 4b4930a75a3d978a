"""smartflows_xml_dataset: XML rendered from the template file, the data set, documents in S3."""

from __future__ import annotations

import datetime
import hashlib
import xml.etree.ElementTree as ET
from typing import TYPE_CHECKING, Any

import jinja2
import pytest

from tests.examples.example_helpers import (
    EXAMPLES,
    S3_BUCKET,
    S3_CONN_ID,
    ExampleRun,
    load_example,
    run_example,
)

if TYPE_CHECKING:
    from airflow_provider_smartflows.emulator import EmulatorServer

pytestmark = pytest.mark.slow  # an example DAG run (S3, data set)

LOGICAL_DATE = datetime.datetime(2024, 6, 3, 9, 0, tzinfo=datetime.timezone.utc)
CONF = {
    "recipient": {"name": 'Müller & <Söhne> "GmbH"', "street": "Hafenstraße 1", "city": "Hamburg"},
    "subject": "Statement 2024",
    "paragraphs": ["First paragraph.", "Second & last."],
    "dataset_id": "letters-2024",
    "bucket_uri": f"s3://{S3_BUCKET}/out/",
    "aws_conn_id": S3_CONN_ID,
}


@pytest.fixture(scope="module")
def run(airflow_db: None, emulator_conn: EmulatorServer, s3_client: Any) -> ExampleRun:
    module = load_example("smartflows_xml_dataset")
    return run_example(module.dag, emulator_conn, logical_date=LOGICAL_DATE, run_conf=CONF)


def expected_xml(run_id: str) -> str:
    """The template rendered on its own, with plain Jinja."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(EXAMPLES / "templates"), undefined=jinja2.StrictUndefined
    )
    return env.get_template("letter.xml.j2").render(params=CONF, ds="2024-06-03", run_id=run_id)


def test_both_tasks_succeed(run: ExampleRun) -> None:
    assert run.states == {"generate": "success", "download": "success"}


def test_the_emulator_received_the_rendered_template(run: ExampleRun) -> None:
    (execution,) = run.executions
    assert execution["flow_id"] == "xml-letter"
    assert execution["input_kind"] == "xml"
    assert execution["input_data"] == expected_xml(run.dag_run.run_id)


def test_the_xml_escapes_the_params(run: ExampleRun) -> None:
    root = ET.fromstring(run.executions[0]["input_data"].encode())
    assert root.get("date") == "2024-06-03"
    assert root.get("reference") == run.dag_run.run_id
    assert root.findtext("recipient/name") == CONF["recipient"]["name"]  # type: ignore[index]
    assert [p.text for p in root.iter("paragraph")] == CONF["paragraphs"]


def test_the_dataset_id_is_sent(run: ExampleRun) -> None:
    assert run.executions[0]["dataset_id"] == "letters-2024"
    (start,) = [r for r in run.requests if r["method"] == "POST" and r["path"].endswith("/flows/executions")]
    assert start["query"]["datasetId"] == "letters-2024"


def test_documents_are_in_s3_under_the_ds_folder(
    run: ExampleRun, s3_client: Any, emulator_conn: EmulatorServer
) -> None:
    document_ids = run.xcom("generate")["document_ids"]
    assert len(document_ids) == 2  # the letter as PDF and as DOCX
    uris = run.xcom("download")
    keys = [uri.split(f"{S3_CONN_ID}@{S3_BUCKET}/", 1)[1] for uri in uris]
    assert keys == ["out/2024-06-03/Letter.pdf", "out/2024-06-03/Letter.docx"]
    listed = sorted(item["Key"] for item in s3_client.list_objects_v2(Bucket=S3_BUCKET)["Contents"])
    assert listed == sorted(keys)
    for key, document_id in zip(keys, document_ids, strict=True):
        body = s3_client.get_object(Bucket=S3_BUCKET, Key=key)["Body"].read()
        assert hashlib.sha256(body).hexdigest() == emulator_conn.document_sha256(document_id)

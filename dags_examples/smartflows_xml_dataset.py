"""
Generate a letter from XML rendered out of a Jinja template file and store it in S3.

What it shows:

- XML input from a template file: ``data`` is a templated field, so
  ``"{% include 'letter.xml.j2' %}"`` renders ``templates/letter.xml.j2`` (found through the DAG's
  ``template_searchpath``) with the run's context: DAG params, ``ds``, ``run_id``... The template
  escapes every value (``| e``) so the XML stays well-formed whatever the params hold.
- ``dataset_id``: the flow's data set the XML feeds (``datasetId`` on the start request).
- ``SmartFlowsDownloadDocumentsOperator`` writing the letter's PDF and DOCX to
  ``<bucket_uri><ds>/`` through an AWS connection. The connection id goes into the URI
  (``s3://<conn id>@bucket/...``, which ``ObjectStoragePath`` understands), because
  ``destination_conn_id`` is not a templated field and so cannot come from a DAG param.

Connections needed:

- ``smartflows_default`` (type ``smartflows``: Host = the server's base URL, Password = an API key);
- the AWS connection named by the param ``aws_conn_id`` (default ``aws_default``), with an
  ``endpoint_url`` extra for an S3-compatible store.

Against the local emulator and a local S3 (``moto_server -p 5000``)::

    python -m airflow_provider_smartflows.emulator --port 8099 &
    export AIRFLOW_CONN_SMARTFLOWS_DEFAULT='{"conn_type": "smartflows", "host": "http://127.0.0.1:8099", "password": "sf-emulator-admin-key"}'
    export AIRFLOW_CONN_AWS_DEFAULT='{"conn_type": "aws", "login": "test", "password": "test", "extra": {"endpoint_url": "http://127.0.0.1:5000", "region_name": "us-east-1"}}'
    airflow dags test smartflows_xml_dataset --conf '{"bucket_uri": "s3://letters/"}'
"""

from __future__ import annotations

import datetime
import os

from airflow.providers.common.compat.sdk import DAG, Param

from airflow_provider_smartflows.operators.smartflows import (
    SmartFlowsDownloadDocumentsOperator,
    SmartFlowsRunFlowOperator,
)

TEMPLATES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "templates")


def with_conn_id(uri: str, conn_id: str) -> str:
    """``s3://bucket/key`` as ``s3://<conn_id>@bucket/key``: the storage URI naming its connection."""
    scheme, sep, rest = uri.partition("://")
    if not sep:
        raise ValueError(f"not a storage URI (scheme://...): {uri!r}")
    if not conn_id or "@" in rest.split("/", 1)[0]:
        return uri
    return f"{scheme}://{conn_id}@{rest}"


with DAG(
    dag_id="smartflows_xml_dataset",
    description="XML from a Jinja template file into a Smart Flows data set; documents to S3",
    schedule=None,
    start_date=datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc),
    catchup=False,
    tags=["smartflows", "example"],
    template_searchpath=[TEMPLATES],
    user_defined_macros={"with_conn_id": with_conn_id},
    params={
        "recipient": Param(
            {"name": "Smith & Sons Ltd.", "street": "1 Harbour Road", "city": "Portsmouth"},
            type="object",
            required=["name", "street", "city"],
            description="Address block of the letter",
        ),
        "subject": Param("Your annual statement", type="string"),
        "paragraphs": Param(
            ["Please find your annual statement enclosed.", "Kind regards, Accounts"],
            type="array",
            items={"type": "string"},
        ),
        "dataset_id": Param("letters", type="string", minLength=1, description="Smart Flows data set"),
        "bucket_uri": Param(
            "s3://smartflows-letters/",
            type="string",
            pattern=r"^\S+://\S+/$",
            description="Folder URI ending with '/'; documents go under <bucket_uri><ds>/",
        ),
        "aws_conn_id": Param("aws_default", type="string", description="Connection of the bucket"),
    },
    doc_md=__doc__,
) as dag:
    generate = SmartFlowsRunFlowOperator(
        task_id="generate",
        flow_id="xml-letter",
        data="{% include 'letter.xml.j2' %}",
        dataset_id="{{ params.dataset_id }}",
        deferrable=True,
        poll_interval=10,
        timeout=600,
    )

    download = SmartFlowsDownloadDocumentsOperator(
        task_id="download",
        execution_id="{{ ti.xcom_pull(task_ids='generate')['execution_id'] }}",
        destination="{{ with_conn_id(params.bucket_uri, params.aws_conn_id) }}{{ ds }}/",
        overwrite=True,
    )

    generate >> download

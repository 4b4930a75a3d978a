"""
Generate a document with Smart Flows and save it to a local folder.

What it shows:

- ``SmartFlowsRunFlowOperator`` starting the flow ``hello`` (no input data) on the worker and
  waiting for it deferred: the triggerer long-polls the execution and logs one line per progress
  change; the task's "Smart Flows execution" button links to the run.
- ``SmartFlowsDownloadDocumentsOperator`` streaming every document of that execution into a
  folder: the DAG param ``output`` or, when empty, the Variable ``smartflows_demo_output``, or else
  ``file://<AIRFLOW_HOME or the current directory>/demo-output/``. Any object-storage URI ending
  with ``/`` works (``s3://bucket/docs/`` with ``destination_conn_id``...).

Connection needed: ``smartflows_default`` (type ``smartflows``: Host = the server's base URL,
Password = an API key). Against the local emulator::

    python -m airflow_provider_smartflows.emulator --port 8099 &
    export AIRFLOW_CONN_SMARTFLOWS_DEFAULT='{"conn_type": "smartflows", "host": "http://127.0.0.1:8099", "password": "sf-emulator-admin-key"}'
    airflow dags test smartflows_generate_document
"""

from __future__ import annotations

import datetime
import os

from airflow.providers.common.compat.sdk import DAG, Param

from airflow_provider_smartflows.operators.smartflows import (
    SmartFlowsDownloadDocumentsOperator,
    SmartFlowsRunFlowOperator,
)

DEFAULT_OUTPUT = f"file://{os.environ.get('AIRFLOW_HOME') or os.getcwd()}/demo-output/"

with DAG(
    dag_id="smartflows_generate_document",
    description="Run the Smart Flows flow 'hello' and download its documents",
    schedule=None,
    start_date=datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc),
    catchup=False,
    tags=["smartflows", "example"],
    params={
        "output": Param(
            "",
            type="string",
            description="Folder URI ending with '/'; empty: Variable smartflows_demo_output or demo-output/",
        )
    },
    doc_md=__doc__,
) as dag:
    generate = SmartFlowsRunFlowOperator(
        task_id="generate",
        flow_id="hello",
        deferrable=True,
        poll_interval=10,
        timeout=600,
    )

    download = SmartFlowsDownloadDocumentsOperator(
        task_id="download",
        execution_id="{{ ti.xcom_pull(task_ids='generate')['execution_id'] }}",
        destination=(
            "{{ params.output or var.value.get('smartflows_demo_output', '" + DEFAULT_OUTPUT + "') }}"
        ),
        overwrite=True,
    )

    generate >> download

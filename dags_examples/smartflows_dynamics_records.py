"""
Generate one document per Dynamics record, one Smart Flows execution per record.

What it shows:

- Dynamic task mapping: a small task turns the DAG param ``record_ids`` into one Dynamics plugin
  input (``{"entity": ..., "id": [record id]}``) per record, and ``SmartFlowsRunFlowOperator``
  is ``.partial(...).expand(data=...)``-ed over them, so every record gets its own execution,
  its own retries and its own "Smart Flows execution" link in the UI. The waits are deferred:
  many records cost triggerer coroutines, not worker slots.
- ``SmartFlowsDownloadDocumentsOperator`` mapped over the executions (``.expand(execution_id=...)``),
  writing every document under ``<destination>/<ds>/`` (the run's logical date), so each day's
  run gets its own folder and a re-run of the same day replaces its files (``overwrite=True``).
  ``destination`` is any object-storage URI: a local ``file://`` folder by default,
  ``s3://bucket/invoices/`` with an AWS connection (see ``smartflows_xml_dataset``).

The flow ``invoice`` takes Dynamics JSON and makes one PDF per record id ("Invoice <id>").

Connection needed: ``smartflows_default`` (type ``smartflows``: Host = the server's base URL,
Password = an API key). Against the local emulator::

    python -m airflow_provider_smartflows.emulator --port 8099 &
    export AIRFLOW_CONN_SMARTFLOWS_DEFAULT='{"conn_type": "smartflows", "host": "http://127.0.0.1:8099", "password": "sf-emulator-admin-key"}'
    airflow dags test smartflows_dynamics_records
    airflow dags test smartflows_dynamics_records --conf '{"record_ids": ["a1", "b2"], "destination": "file:///tmp/invoices/"}'
"""

from __future__ import annotations

import datetime
import os
from typing import Any

from airflow.providers.common.compat.sdk import DAG, Param, task

from airflow_provider_smartflows.operators.smartflows import (
    SmartFlowsDownloadDocumentsOperator,
    SmartFlowsRunFlowOperator,
)

DEFAULT_DESTINATION = f"file://{os.environ.get('AIRFLOW_HOME') or os.getcwd()}/smartflows-invoices/"
DEFAULT_RECORD_IDS = [
    "8f14e45f-ceea-4167-a5a3-3a1a5c2b7e01",
    "c9f0f895-fb98-4b91-9a5e-d2d6f2b3c802",
    "45c48cce-2e2d-4fbd-b4cb-8c0b1f3c0903",
]


def _execution_id(result: dict[str, Any]) -> str:
    """The execution id out of a ``SmartFlowsRunFlowOperator`` result."""
    return str(result["execution_id"])


with DAG(
    dag_id="smartflows_dynamics_records",
    description="One Smart Flows execution per Dynamics record (dynamic task mapping)",
    schedule=None,
    start_date=datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc),
    catchup=False,
    tags=["smartflows", "example"],
    params={
        "record_ids": Param(
            DEFAULT_RECORD_IDS,
            type="array",
            items={"type": "string", "minLength": 1},
            minItems=1,
            description="Dynamics record ids: one execution (and one document) per id",
        ),
        "entity": Param("invoice", type="string", minLength=1, description="Dynamics entity name"),
        "destination": Param(
            DEFAULT_DESTINATION,
            type="string",
            pattern=r"^\S+://\S*/$",
            description="Folder URI ending with '/'; documents go under <destination><ds>/",
        ),
    },
    doc_md=__doc__,
) as dag:

    @task
    def record_inputs(params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """One Dynamics plugin input per record id (the shape the flow's data source expects)."""
        assert params is not None  # injected from the context
        return [{"entity": params["entity"], "id": [record_id]} for record_id in params["record_ids"]]

    generate = SmartFlowsRunFlowOperator.partial(
        task_id="generate",
        flow_id="invoice",
        deferrable=True,
        poll_interval=10,
        timeout=600,
        map_index_template="{{ task.data['id'][0] }}",
    ).expand(data=record_inputs())

    download = SmartFlowsDownloadDocumentsOperator.partial(
        task_id="download",
        destination="{{ params.destination }}{{ ds }}/",
        overwrite=True,
    ).expand(execution_id=generate.output.map(_execution_id))

"""
This month's invoice for every customer: one task, one Smart Flows execution per record.

What it shows:

- ``SmartFlowsRunFlowBatchOperator`` streaming its records from a JSON Lines object (one customer
  per line, read line by line: 100,000 lines never sit in memory or in an XCom), turning each into
  the flow's Dynamics input with ``data_template``, and running at most ``max_active`` executions
  at once. ``deferrable=True``: between waves the task waits on the triggerer, one trigger for all
  running executions, so the worker is busy only while it records results and starts the next ones.
- Each customer's invoice saved as ``<destination><ds>/<customer_id>.pdf`` (any object-storage URI).
- A results manifest (one JSON line per customer: execution, status, the flow's messages, the
  document's uri, size and sha256) under ``<destination><ds>/``, with the batch's checkpoint next
  to it: a retry of the task resumes the batch, never running a finished customer again. The
  task's XCom holds only the counts and the manifest's URI.
- A failed execution is retried once per customer (``record_retries``); the task fails at the end
  if more than 1 % of the customers failed (``max_failed_records=0.01``), naming the manifest.

The first task writes a small records file for the demo (``<destination>customers.jsonl``); in
production the records object comes from an export (``records_uri`` + ``records_conn_id``).

Connection needed: ``smartflows_default`` (type ``smartflows``: Host = the server's base URL,
Password = an API key). Against the local emulator::

    python -m airflow_provider_smartflows.emulator --port 8099 &
    export AIRFLOW_CONN_SMARTFLOWS_DEFAULT='{"conn_type": "smartflows", "host": "http://127.0.0.1:8099", "password": "sf-emulator-admin-key"}'
    airflow dags test smartflows_batch_invoices
    airflow dags test smartflows_batch_invoices --conf '{"customers": 500, "destination": "file:///tmp/invoices/"}'
"""

from __future__ import annotations

import datetime
import json
import os
from typing import Any

from airflow.providers.common.compat.sdk import DAG, ObjectStoragePath, Param, task

from airflow_provider_smartflows.operators.batch import SmartFlowsRunFlowBatchOperator

DEFAULT_DESTINATION = f"file://{os.environ.get('AIRFLOW_HOME') or os.getcwd()}/smartflows-batch-invoices/"

with DAG(
    dag_id="smartflows_batch_invoices",
    description="One Smart Flows execution per customer from a JSON Lines object, in one task",
    schedule=None,
    start_date=datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc),
    catchup=False,
    tags=["smartflows", "example"],
    params={
        "customers": Param(20, type="integer", minimum=1, description="How many demo customers to write"),
        "destination": Param(
            DEFAULT_DESTINATION,
            type="string",
            pattern=r"^\S+://\S*/$",
            description="Folder URI ending with '/': records, manifest and invoices go under it",
        ),
    },
    doc_md=__doc__,
) as dag:

    @task
    def write_customers(params: dict[str, Any] | None = None) -> str:
        """A demo records object: one JSON object per line (an export in production)."""
        assert params is not None  # injected from the context
        path = ObjectStoragePath(f"{params['destination']}customers.jsonl")
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w") as sink:
            for number in range(1, params["customers"] + 1):
                customer = {"customer_id": f"C{number:05d}", "account_id": f"acc-{number:05d}"}
                sink.write(json.dumps(customer) + "\n")
        return str(path)

    SmartFlowsRunFlowBatchOperator(
        task_id="generate_invoices",
        flow_id="invoice",
        records_uri=write_customers(),
        record_key="customer_id",
        data_template={"entity": "account", "id": ["{record[account_id]}"]},
        destination="{{ params.destination }}{{ ds }}/{record[customer_id]}.pdf",
        # Unique per run ({{ ds }} is not: two runs of the same day would share a checkpoint).
        manifest_uri="{{ params.destination }}{{ ds }}/manifests/{{ run_id }}.jsonl",
        max_active=10,
        record_retries=1,
        max_failed_records=0.01,
        deferrable=True,
        poll_interval=30,
    )

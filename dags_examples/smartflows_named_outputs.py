"""
Run a flow by its name, without stopping at its prompt, and read one of its outputs downstream.

What it shows:

- ``SmartFlowsRunFlowOperator`` with ``flow_name="Approval"``: the display name is resolved to the
  flow's id once, before the start (the result carries ``flow_id`` and ``flow_name``);
- ``skip_user_input=True``: the vendor's prompt-free start (``POST /flows/executions/start``), so
  the flow's ``UserInput`` form takes its default values instead of waiting for a person;
- the result's ``outputs`` (``{output displayName: content}``) read by a downstream task: the
  ``Decision`` output of the flow, without digging into the execution's ``model``.

Connection needed: ``smartflows_default`` (type ``smartflows``: Host = the server's base URL,
Password = an API key). Against the local emulator (its ``approval`` flow declares the output)::

    python -m airflow_provider_smartflows.emulator --port 8099 &
    export AIRFLOW_CONN_SMARTFLOWS_DEFAULT='{"conn_type": "smartflows", "host": "http://127.0.0.1:8099", "password": "sf-emulator-admin-key"}'
    airflow dags test smartflows_named_outputs
"""

from __future__ import annotations

import datetime
from typing import Any

from airflow.providers.common.compat.sdk import DAG, task

from airflow_provider_smartflows.operators.smartflows import SmartFlowsRunFlowOperator

with DAG(
    dag_id="smartflows_named_outputs",
    description="Run the flow 'Approval' by name without its prompt and read its Decision output",
    schedule=None,
    start_date=datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc),
    catchup=False,
    tags=["smartflows", "example"],
    doc_md=__doc__,
) as dag:
    generate = SmartFlowsRunFlowOperator(
        task_id="generate",
        flow_name="Approval",
        skip_user_input=True,
        deferrable=True,
        poll_interval=10,
        timeout=600,
    )

    @task
    def decision(result: dict[str, Any]) -> str:
        """The flow's ``Decision`` output (the result's ``outputs`` maps display names to contents)."""
        value = str(result["outputs"].get("Decision", "no decision"))
        print(f"Flow {result['flow_name']!r} ({result['flow_id']}) decided: {value}")
        return value

    decision(generate.output)

"""
Archive the documents of every Smart Flows execution started in the CRM, as soon as it finishes.

What it shows:

- an ``Asset`` watched by ``SmartFlowsExecutionEventTrigger`` (an ``AssetWatcher``): executions
  started outside Airflow (the Dynamics or Sugar plug-in, the flow execution panel, other
  programs) that finish with ``Success`` or ``Warning`` schedule this DAG; the executions this
  connection's own user starts (Airflow's own runs) do not (``include_own=False``, the default);
- one asset event per execution (the trigger keeps its cursor in the asset's state store:
  Airflow >= 3.3; a triggerer killed hard in the second after Airflow stored an event reports that
  execution again after its restart, so the archive is keyed on the execution id and overwrites),
  its payload in the event's ``extra["payload"]``: execution id, flow, status,
  creator, document ids, named outputs;
- the download operator reading the execution id from the triggering asset event: one mapped
  download per execution (Airflow may hand one DAG run several events that arrived together),
  each into its own folder ``<ARCHIVE_ROOT>/<flow id>/<execution id>/``;
- the named outputs logged.

Connection needed: ``smartflows_default`` (type ``smartflows``: Host = the server's base URL,
Password = an API key that may see other users' executions, on most servers an admin's key).
``SMARTFLOWS_ARCHIVE_ROOT`` (default ``file:///tmp/smartflows-archive/``) is where documents go;
an ``s3://`` root needs an AWS connection (``destination_conn_id``). Against the local emulator,
with a triggerer running, start executions "as the CRM" with its admin route::

    python -m airflow_provider_smartflows.emulator --port 8099 &
    export AIRFLOW_CONN_SMARTFLOWS_DEFAULT='{"conn_type": "smartflows", "host": "http://127.0.0.1:8099", "password": "sf-emulator-admin-key"}'
    airflow standalone   # scheduler, triggerer, dag-processor, api-server
    curl -X POST http://127.0.0.1:8099/_emulator/executions/start-as \\
         -H 'X-API-Key: sf-emulator-admin-key' -d '{"flow": "hello", "user": "crm.user"}'
"""

from __future__ import annotations

import datetime
import os
from typing import Any

from airflow.providers.common.compat.sdk import DAG, Asset, task

from airflow_provider_smartflows.operators.download import SmartFlowsDownloadDocumentsOperator
from airflow_provider_smartflows.triggers.events import SmartFlowsExecutionEventTrigger
from airflow_provider_smartflows.version_compat import AIRFLOW_V_3_3_PLUS, AIRFLOW_VERSION

if not AIRFLOW_V_3_3_PLUS:  # say why, rather than fail on the missing AssetWatcher
    raise ImportError(
        f"smartflows_archive_crm_documents needs Airflow >= 3.3 (this is {AIRFLOW_VERSION}): "
        "SmartFlowsExecutionEventTrigger keeps its cursor in the asset state store of Airflow 3.3."
    )

from airflow.sdk import AssetWatcher

ARCHIVE_ROOT = os.environ.get("SMARTFLOWS_ARCHIVE_ROOT", "file:///tmp/smartflows-archive/").rstrip("/")

crm_documents = Asset(
    "smartflows_crm_executions",
    watchers=[
        AssetWatcher(
            name="smartflows_crm_executions_watcher",
            trigger=SmartFlowsExecutionEventTrigger(
                smartflows_conn_id="smartflows_default",
                statuses=["Success", "Warning"],
                poll_interval=10,
            ),
        )
    ],
)

with DAG(
    dag_id="smartflows_archive_crm_documents",
    description="Download the documents of each execution finished in Smart Flows outside Airflow",
    schedule=[crm_documents],
    start_date=datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc),
    catchup=False,
    tags=["smartflows", "example"],
    doc_md=__doc__,
) as dag:

    @task
    def finished_executions(triggering_asset_events: Any = None) -> list[dict[str, Any]]:
        """The executions behind this run: one per asset event (Airflow may merge several in one run)."""
        executions = []
        for events in (triggering_asset_events or {}).values():
            for event in events:
                payload = (event.extra or {}).get("payload") or {}
                if payload.get("execution_id"):
                    executions.append(payload)
        for execution in executions:
            print(
                f"Execution {execution['execution_id']} of flow {execution['flow_name']!r} "
                f"({execution['status']}, started by {execution['created_by']}): "
                f"{len(execution['document_ids'])} document(s), outputs {execution['outputs']}"
            )
        return executions

    @task
    def download_arguments(executions: list[dict[str, Any]]) -> list[dict[str, str]]:
        """Where each execution's documents go: its own folder under the archive root."""
        return [
            {
                "execution_id": ex["execution_id"],
                "destination": f"{ARCHIVE_ROOT}/{ex['flow_id'] or 'no-flow'}/{ex['execution_id']}/",
            }
            for ex in executions
            if ex["document_ids"]
        ]

    SmartFlowsDownloadDocumentsOperator.partial(task_id="archive", overwrite=True).expand_kwargs(
        download_arguments(finished_executions())
    )

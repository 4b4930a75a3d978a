"""System-test DAG: an asset watched by the Smart Flows event trigger; each run records the
executions of its asset events (one file per execution and run) and downloads their documents."""

from __future__ import annotations

import datetime
import os
from pathlib import Path
from typing import Any

from airflow.sdk import DAG, Asset, AssetWatcher, task

from airflow_provider_smartflows.operators.download import SmartFlowsDownloadDocumentsOperator
from airflow_provider_smartflows.triggers.events import SmartFlowsExecutionEventTrigger

OUT = Path(os.environ.get("SMARTFLOWS_EVENT_OUT", "/tmp/smartflows-event-system"))

executions = Asset(
    "smartflows_system_executions",
    watchers=[
        AssetWatcher(
            name="smartflows_system_watcher",
            trigger=SmartFlowsExecutionEventTrigger(poll_interval=1.0),
        )
    ],
)

with DAG(
    dag_id="smartflows_event_system",
    schedule=[executions],
    start_date=datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc),
    catchup=False,
    max_active_runs=4,
) as dag:

    @task
    def record(triggering_asset_events: Any = None, run_id: str | None = None) -> list[dict[str, str]]:
        seen = OUT / "seen"
        seen.mkdir(parents=True, exist_ok=True)
        downloads = []
        for events in (triggering_asset_events or {}).values():
            for event in events:
                payload = event.extra["payload"]
                (seen / f"{payload['execution_id']}.{run_id}").write_text(payload["status"])
                if payload["document_ids"]:
                    target = (OUT / "documents" / payload["execution_id"]).as_uri() + "/"
                    downloads.append({"execution_id": payload["execution_id"], "destination": target})
        return downloads

    SmartFlowsDownloadDocumentsOperator.partial(task_id="download", overwrite=True).expand_kwargs(record())

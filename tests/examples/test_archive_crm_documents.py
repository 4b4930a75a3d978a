"""smartflows_archive_crm_documents: the watcher's trigger and the tasks that read the asset events
(the DAG runs from real asset events in tests/system/test_event_system.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from tests.examples.example_helpers import load_example

pytestmark = pytest.mark.airflow_version(min="3.3", reason="the event trigger needs the asset state store")


@dataclass
class AssetEvent:
    extra: dict[str, Any]


def payload(execution_id: str, flow_id: str, document_ids: list[str]) -> dict[str, Any]:
    return {
        "execution_id": execution_id,
        "flow_id": flow_id,
        "flow_name": flow_id.title(),
        "status": "Success",
        "created_at": "2026-12-05T14:00:00.000Z",
        "created_by": "crm.user",
        "modified_at": "2026-12-05T14:00:03.000Z",
        "document_ids": document_ids,
        "outputs": {},
    }


def test_the_asset_is_watched_for_finished_executions_of_other_users() -> None:
    module = load_example("smartflows_archive_crm_documents")
    (watcher,) = module.crm_documents.watchers
    _, kwargs = watcher.trigger.serialize()
    assert kwargs["statuses"] == ["Success", "Warning"]
    assert kwargs["include_own"] is False
    assert "password" not in str(kwargs)


def test_every_event_of_a_run_gets_its_own_download_folder() -> None:
    """Airflow may merge several asset events into one run: each execution is downloaded."""
    module = load_example("smartflows_archive_crm_documents")
    tasks = module.dag.task_dict
    events = {
        module.crm_documents: [
            AssetEvent({"from_trigger": True, "payload": payload("e1", "invoice", ["d1"])}),
            AssetEvent({"from_trigger": True, "payload": payload("e2", "error", [])}),
            AssetEvent({"from_trigger": True, "payload": payload("e3", "invoice", ["d2", "d3"])}),
        ]
    }
    executions = tasks["finished_executions"].python_callable(triggering_asset_events=events)
    assert [ex["execution_id"] for ex in executions] == ["e1", "e2", "e3"]
    arguments = tasks["download_arguments"].python_callable(executions)
    assert arguments == [
        {"execution_id": "e1", "destination": f"{module.ARCHIVE_ROOT}/invoice/e1/"},
        {"execution_id": "e3", "destination": f"{module.ARCHIVE_ROOT}/invoice/e3/"},
    ]

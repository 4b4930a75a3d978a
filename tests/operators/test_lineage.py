"""OpenLineage events of the run and download operators, from real ``dag.test()`` runs.

The OpenLineage provider's listener is registered for the test with a file transport (set through
``AIRFLOW__OPENLINEAGE__TRANSPORT``) and emits in a thread that the task waits for
(``execute_in_thread``), so a task's events are in the file when ``dag.test()`` returns."""

from __future__ import annotations

import contextlib
import json
from typing import TYPE_CHECKING, Any

import pytest

from airflow_provider_smartflows.operators.smartflows import (
    SmartFlowsDownloadDocumentsOperator,
    SmartFlowsRunFlowOperator,
)
from airflow_provider_smartflows.version_compat import AIRFLOW_VERSION
from tests.support.dag_runs import make_dag

AIRFLOW_V_3_0_PLUS = int(AIRFLOW_VERSION.split(".")[0]) >= 3

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

pytest.importorskip("airflow.providers.openlineage", reason="the OpenLineage provider is not installed")
pytestmark = [
    pytest.mark.slow,  # a dag.test() run
    pytest.mark.usefixtures("smartflows_conn"),
    pytest.mark.skipif(not AIRFLOW_V_3_0_PLUS, reason="the listener is registered the Airflow 3 way"),
]

EXECUTION_ID = "{{ ti.xcom_pull(task_ids='generate')['execution_id'] }}"


@pytest.fixture(scope="module")
def events_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # One file for the module: the provider builds its listener and client once per process.
    return tmp_path_factory.mktemp("openlineage") / "events.jsonl"


@pytest.fixture
def lineage_events(
    events_file: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[[str], list[dict]]]:
    """``lineage_events(dag_id)``: the OpenLineage events of that DAG's tasks emitted so far."""
    from airflow.listeners.listener import get_listener_manager
    from airflow.providers.openlineage import conf
    from airflow.providers.openlineage.plugins.listener import get_openlineage_listener

    transport = {"type": "file", "log_file_path": str(events_file), "append": True}
    monkeypatch.setenv("AIRFLOW__OPENLINEAGE__TRANSPORT", json.dumps(transport))
    monkeypatch.setenv("AIRFLOW__OPENLINEAGE__DISABLED", "false")
    monkeypatch.setenv("AIRFLOW__OPENLINEAGE__EXECUTE_IN_THREAD", "true")
    _forget_options(conf)  # read once per process (functools.cache); other tests run without
    listener = get_openlineage_listener()
    # Task events go through the task SDK's listener manager, DAG-run events through the core one;
    # each is built once per process (with the plugins enabled then), so register on both.
    managers = [get_listener_manager()]
    with contextlib.suppress(ImportError):
        from airflow.sdk.listener import get_listener_manager as get_sdk_listener_manager

        managers.append(get_sdk_listener_manager())
    added = [m for m in managers if not m.pm.is_registered(listener)]
    for manager in added:
        manager.add_listener(listener)

    def read(dag_id: str) -> list[dict]:
        lines = events_file.read_text().splitlines() if events_file.exists() else []
        events = [json.loads(line) for line in lines if line.strip()]
        return [e for e in events if e["job"]["name"].startswith(f"{dag_id}.")]

    try:
        yield read
    finally:
        for manager in added:
            manager.pm.unregister(listener)
        monkeypatch.undo()
        _forget_options(conf)


def _forget_options(conf: Any) -> None:
    for name in ("transport", "is_disabled", "execute_in_thread"):
        getattr(getattr(conf, name), "cache_clear", lambda: None)()


def completed(events: list[dict], task_id: str) -> dict:
    (event,) = [
        e for e in events if e["eventType"] == "COMPLETE" and e["job"]["name"].endswith(f".{task_id}")
    ]
    return event


def run(run_dag: Any, **download_kwargs: Any) -> Any:
    def build() -> None:
        generate = SmartFlowsRunFlowOperator(task_id="generate", flow_id="multi-docs", poll_interval=2)
        download = SmartFlowsDownloadDocumentsOperator(
            task_id="download", execution_id=EXECUTION_ID, **download_kwargs
        )
        generate >> download

    result = run_dag(make_dag("lineage", build))
    assert result.states == {"generate": "success", "download": "success"}
    return result


def test_download_outputs_one_file_dataset_per_document(
    run_dag: Any, smartflows_emulator: Any, lineage_events: Any, tmp_path: Path
) -> None:
    result = run(run_dag, destination=f"file://{tmp_path}/out/")
    execution_id = result.xcom("generate")["execution_id"]
    event = completed(lineage_events(result.dag_run.dag_id), "download")
    outputs = [
        (o["namespace"], o["name"], o["outputFacets"]["outputStatistics"]["size"]) for o in event["outputs"]
    ]
    document_ids = result.xcom("generate")["document_ids"]
    names = ["Report.pdf", "Report (2).pdf", "Report.docx"]
    assert outputs == [
        ("file", f"{tmp_path}/out/{name}", smartflows_emulator.document_size(document_id))
        for name, document_id in zip(names, document_ids, strict=True)
    ]
    facet = event["run"]["facets"]["externalQuery"]
    assert (facet["externalQueryId"], facet["source"]) == (execution_id, smartflows_emulator.base_url)


def test_run_operator_reports_the_execution(
    run_dag: Any, smartflows_emulator: Any, lineage_events: Any, tmp_path: Path
) -> None:
    result = run(run_dag, destination=f"file://{tmp_path}/out/")
    event = completed(lineage_events(result.dag_run.dag_id), "generate")
    facet = event["run"]["facets"]["externalQuery"]
    assert facet["externalQueryId"] == result.xcom("generate")["execution_id"]
    assert facet["source"] == smartflows_emulator.base_url


def test_download_to_s3_names_bucket_and_key(
    run_dag: Any,
    smartflows_emulator: Any,
    lineage_events: Any,
    moto_bucket: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with moto_bucket(monkeypatch, "aws_lineage", "lineage-docs"):
        result = run(run_dag, destination="s3://aws_lineage@lineage-docs/{{ ds }}/")
    ds = result.dag_run.logical_date.strftime("%Y-%m-%d")
    event = completed(lineage_events(result.dag_run.dag_id), "download")
    assert [(o["namespace"], o["name"]) for o in event["outputs"]] == [
        ("s3://lineage-docs", f"{ds}/{name}") for name in ("Report.pdf", "Report (2).pdf", "Report.docx")
    ]

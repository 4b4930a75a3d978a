"""What the batch's tests share: records, the run of a one-task DAG, and the manifest it wrote.

Local to the batch's test modules (tests.operators.batch.batch_helpers); the dag.test() harness
itself is tests.support.dag_runs.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import pytest

from airflow_provider_smartflows.operators.batch import SmartFlowsRunFlowBatchOperator
from airflow_provider_smartflows.operators.batch.state import BatchStore
from tests.support.dag_runs import make_dag

if TYPE_CHECKING:
    from pathlib import Path

MODES = pytest.mark.parametrize("deferrable", [False, True], ids=["sync", "deferrable"])

DYNAMICS = {"entity": "account", "id": ["{record[account]}"]}


def customers(count: int) -> list[dict[str, Any]]:
    return [{"customer_id": f"c{n:03d}", "account": f"acc-{n}"} for n in range(1, count + 1)]


def run_batch(run_dag: Any, tmp_path: Path, **kwargs: Any) -> Any:
    kwargs.setdefault("flow_id", "invoice")
    kwargs.setdefault("manifest_uri", f"file://{tmp_path}/out/manifest.jsonl")
    kwargs.setdefault("poll_interval", 2)
    kwargs.setdefault("gather_seconds", 0.1)
    dag = make_dag("batch", lambda: SmartFlowsRunFlowBatchOperator(task_id="batch", **kwargs))
    return run_dag(dag)


def read_manifest(manifest_uri: str, conn_id: str | None = None) -> list[dict[str, Any]]:
    """Every line of a batch's manifest (it reads the whole object: for small batches)."""
    text = BatchStore(manifest_uri, conn_id).manifest.read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def manifest(tmp_path: Path) -> list[dict[str, Any]]:
    return read_manifest(f"file://{tmp_path}/out/manifest.jsonl")


def starts_by_account(emulator: Any) -> dict[str, int]:
    counts: dict[str, int] = {}
    for execution in emulator.executions:
        account = execution["input_data"]["id"][0]
        counts[account] = counts.get(account, 0) + 1
    return counts

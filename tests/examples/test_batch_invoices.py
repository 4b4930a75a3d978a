"""smartflows_batch_invoices: one execution and one invoice per customer, a manifest, one task."""

from __future__ import annotations

import datetime
import hashlib
import json
from typing import TYPE_CHECKING

import pytest

from tests.examples.example_helpers import ExampleRun, load_example, run_example

if TYPE_CHECKING:
    from pathlib import Path

    from airflow_provider_smartflows.emulator import EmulatorServer

pytestmark = pytest.mark.slow  # a DAG run of many mapped tasks

CUSTOMERS = 25
LOGICAL_DATE = datetime.datetime(2024, 5, 31, 6, 0, tzinfo=datetime.timezone.utc)


@pytest.fixture(scope="module")
def output(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("batch-invoices")


@pytest.fixture(scope="module")
def run(airflow_db: None, emulator_conn: EmulatorServer, output: Path) -> ExampleRun:
    module = load_example("smartflows_batch_invoices")
    return run_example(
        module.dag,
        emulator_conn,
        logical_date=LOGICAL_DATE,
        run_conf={"customers": CUSTOMERS, "destination": f"file://{output}/"},
    )


def test_the_batch_succeeds_in_one_task(run: ExampleRun) -> None:
    assert run.dag_run.state == "success"
    assert run.states == {"write_customers": "success", "generate_invoices": "success"}


def test_one_execution_per_customer(run: ExampleRun) -> None:
    accounts = sorted(e["input_data"]["id"][0] for e in run.executions)
    assert accounts == [f"acc-{n:05d}" for n in range(1, CUSTOMERS + 1)]
    assert {e["flow_id"] for e in run.executions} == {"invoice"}


def test_one_invoice_per_customer_and_a_manifest(
    run: ExampleRun, output: Path, emulator_conn: EmulatorServer
) -> None:
    day = output / "2024-05-31"
    assert sorted(p.name for p in day.glob("*.pdf")) == [f"C{n:05d}.pdf" for n in range(1, CUSTOMERS + 1)]
    manifest = day / "manifests" / f"{run.dag_run.run_id}.jsonl"
    lines = [json.loads(line) for line in manifest.read_text().splitlines()]
    assert sorted(line["key"] for line in lines) == [f"C{n:05d}" for n in range(1, CUSTOMERS + 1)]
    for line in lines:
        (document,) = line["documents"]
        pdf = day / f"{line['key']}.pdf"
        assert document["uri"] == f"file://{pdf}"
        assert document["sha256"] == hashlib.sha256(pdf.read_bytes()).hexdigest()
        assert document["sha256"] == emulator_conn.document_sha256(document["document_id"])


def test_the_xcom_is_a_summary(run: ExampleRun, output: Path) -> None:
    summary = run.xcom("generate_invoices")
    assert summary["manifest"] == f"file://{output}/2024-05-31/manifests/{run.dag_run.run_id}.jsonl"
    assert (summary["total"], summary["succeeded"], summary["failed"], summary["documents"]) == (
        CUSTOMERS,
        CUSTOMERS,
        0,
        CUSTOMERS,
    )
    assert len(json.dumps(summary)) < 1000

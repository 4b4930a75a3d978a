"""smartflows_dynamics_records: one execution and one document per record, under the ds folder."""

from __future__ import annotations

import datetime
import hashlib
from typing import TYPE_CHECKING

import pytest

from tests.examples.example_helpers import ExampleRun, load_example, run_example

if TYPE_CHECKING:
    from pathlib import Path

    from airflow_provider_smartflows.emulator import EmulatorServer

pytestmark = pytest.mark.slow  # a DAG run of many mapped tasks

RECORDS = ["rec-a", "rec-b", "rec-c"]
LOGICAL_DATE = datetime.datetime(2024, 5, 17, 6, 30, tzinfo=datetime.timezone.utc)


@pytest.fixture(scope="module")
def output(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("invoices")


@pytest.fixture(scope="module")
def run(airflow_db: None, emulator_conn: EmulatorServer, output: Path) -> ExampleRun:
    module = load_example("smartflows_dynamics_records")
    return run_example(
        module.dag,
        emulator_conn,
        logical_date=LOGICAL_DATE,
        run_conf={"record_ids": RECORDS, "destination": f"file://{output}/"},
    )


def test_every_mapped_task_succeeds(run: ExampleRun) -> None:
    assert run.dag_run.state == "success"
    assert run.states == {
        "record_inputs": "success",
        **{f"generate[{i}]": "success" for i in range(len(RECORDS))},
        **{f"download[{i}]": "success" for i in range(len(RECORDS))},
    }


def test_one_execution_per_record(run: ExampleRun) -> None:
    invoices = [e for e in run.executions if e["flow_id"] == "invoice"]
    assert len(run.executions) == len(invoices) == len(RECORDS)
    assert sorted(e["input_kind"] for e in invoices) == ["dynamics"] * len(RECORDS)
    assert sorted(e["input_data"]["id"][0] for e in invoices) == RECORDS
    assert all(e["input_data"] == {"entity": "invoice", "id": [e["input_data"]["id"][0]]} for e in invoices)


def test_each_mapped_task_reports_its_own_execution(run: ExampleRun) -> None:
    by_record = {e["input_data"]["id"][0]: e for e in run.executions}
    for index, record in enumerate(RECORDS):
        result = run.xcom("generate", map_index=index)
        assert result["execution_id"] == by_record[record]["id"]
        assert result["document_ids"] == by_record[record]["documents"]


def test_one_file_per_record_under_the_ds_folder(
    run: ExampleRun, output: Path, emulator_conn: EmulatorServer
) -> None:
    day = output / "2024-05-17"
    assert sorted(p.name for p in output.iterdir()) == ["2024-05-17"]
    assert sorted(p.name for p in day.iterdir()) == [f"Invoice {record}.pdf" for record in RECORDS]
    for index, record in enumerate(RECORDS):
        (document_id,) = run.xcom("generate", map_index=index)["document_ids"]
        pdf = day / f"Invoice {record}.pdf"
        assert run.xcom("download", map_index=index) == [f"file://{pdf}"]
        assert hashlib.sha256(pdf.read_bytes()).hexdigest() == emulator_conn.document_sha256(document_id)


def test_mapped_instances_are_named_after_their_record(run: ExampleRun) -> None:
    from airflow.utils.session import create_session

    with create_session() as session:
        names = {
            ti.map_index: ti.rendered_map_index
            for ti in run.dag_run.get_task_instances(session=session)
            if ti.task_id == "generate"
        }
    assert names == dict(enumerate(RECORDS))

"""Every file of dags_examples/ imports cleanly into a DagBag, with the DAGs the examples promise."""

from __future__ import annotations

from typing import Any

import pytest

from tests.examples.example_helpers import EXAMPLES

EXPECTED = {
    "smartflows_generate_document",
    "smartflows_dynamics_records",
    "smartflows_xml_dataset",
    "smartflows_retries_and_alerts",
    "smartflows_batch_invoices",
    "smartflows_approval_form",
    "smartflows_named_outputs",
}


@pytest.fixture(scope="module")
def dagbag() -> Any:
    try:
        from airflow.dag_processing.dagbag import DagBag
    except ImportError:  # Airflow < 3.2
        from airflow.models.dagbag import DagBag  # type: ignore[no-redef]

    return DagBag(dag_folder=str(EXAMPLES))


def test_no_import_errors(dagbag: Any) -> None:
    assert dagbag.import_errors == {}


def test_every_example_dag_is_there(dagbag: Any) -> None:
    assert set(dagbag.dag_ids) == EXPECTED
    assert {path.name for path in EXAMPLES.glob("*.py")} == {f"{dag_id}.py" for dag_id in EXPECTED}


@pytest.mark.parametrize("dag_id", sorted(EXPECTED))
def test_example_conventions(dagbag: Any, dag_id: str) -> None:
    dag = dagbag.dags[dag_id]
    assert type(dag.timetable).__name__ == "NullTimetable"  # schedule=None
    assert dag.catchup is False
    assert set(dag.tags) == {"smartflows", "example"}
    # The docstring says what the DAG shows and which connection it needs.
    assert dag.doc_md
    assert "What it shows" in dag.doc_md
    assert "smartflows_default" in dag.doc_md

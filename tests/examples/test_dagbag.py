"""Every file of dags_examples/ imports cleanly into a DagBag, with the DAGs the examples promise."""

from __future__ import annotations

from typing import Any

import pytest

from airflow_provider_smartflows.version_compat import AIRFLOW_V_3_3_PLUS
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
#: Scheduled by an asset that a Smart Flows event trigger watches (Airflow >= 3.3 only: older lines
#: have no asset state store, and the trigger refuses to be built there, naming the version).
ASSET_SCHEDULED = {"smartflows_archive_crm_documents"}
if AIRFLOW_V_3_3_PLUS:
    EXPECTED |= ASSET_SCHEDULED


@pytest.fixture(scope="module")
def dagbag() -> Any:
    try:
        from airflow.dag_processing.dagbag import DagBag
    except ImportError:  # Airflow < 3.2
        from airflow.models.dagbag import DagBag  # type: ignore[no-redef]

    return DagBag(dag_folder=str(EXAMPLES))


def test_no_import_errors(dagbag: Any) -> None:
    errors = dict(dagbag.import_errors)
    if not AIRFLOW_V_3_3_PLUS:
        for dag_id in ASSET_SCHEDULED:
            assert "needs Airflow >= 3.3" in errors.pop(
                str(EXAMPLES / f"{dag_id}.py"), "needs Airflow >= 3.3"
            )
    assert errors == {}


def test_every_example_dag_is_there(dagbag: Any) -> None:
    assert set(dagbag.dag_ids) == EXPECTED
    assert {path.name for path in EXAMPLES.glob("*.py")} == {
        f"{dag_id}.py" for dag_id in EXPECTED | ASSET_SCHEDULED
    }


@pytest.mark.parametrize("dag_id", sorted(EXPECTED))
def test_example_conventions(dagbag: Any, dag_id: str) -> None:
    dag = dagbag.dags[dag_id]
    expected = (
        "AssetTriggeredTimetable" if dag_id in ASSET_SCHEDULED else "NullTimetable"
    )  # else schedule=None
    assert type(dag.timetable).__name__ == expected
    assert dag.catchup is False
    assert set(dag.tags) == {"smartflows", "example"}
    # The docstring says what the DAG shows and which connection it needs.
    assert dag.doc_md
    assert "What it shows" in dag.doc_md
    assert "smartflows_default" in dag.doc_md

"""The batch's records (list, XCom, JSON Lines, CSV), their keys and inputs, through real Airflow."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import pytest

from airflow_provider_smartflows.operators.batch import SmartFlowsRunFlowBatchOperator
from tests.operators.batch.batch_helpers import DYNAMICS, customers, manifest, run_batch, starts_by_account
from tests.support.dag_runs import make_dag

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("smartflows_conn")]  # dag.test() runs


def test_records_from_an_xcom(run_dag: Any, smartflows_emulator: Any, tmp_path: Path) -> None:
    from airflow.providers.common.compat.sdk import task

    def build() -> None:
        @task
        def make_records() -> list[dict[str, Any]]:
            return customers(4)

        SmartFlowsRunFlowBatchOperator(
            task_id="batch",
            flow_id="invoice",
            records=make_records(),
            data_template=DYNAMICS,
            manifest_uri=f"file://{tmp_path}/out/manifest.jsonl",
            poll_interval=2,
            gather_seconds=0.1,
        )

    result = run_dag(make_dag("batch_xcom", build))
    assert result.states["batch"] == "success"
    assert starts_by_account(smartflows_emulator) == {f"acc-{n}": 1 for n in range(1, 5)}
    assert sorted(line["key"] for line in manifest(tmp_path)) == ["1", "2", "3", "4"]


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_records_streamed_from_a_local_object(
    run_dag: Any, smartflows_emulator: Any, tmp_path: Path, fmt: str
) -> None:
    records = customers(5)
    source = tmp_path / f"records.{fmt}"
    if fmt == "jsonl":
        source.write_text("".join(json.dumps(r) + "\n" for r in records) + "\n")  # a blank last line
    else:
        source.write_text(
            "customer_id,account\n" + "".join(f"{r['customer_id']},{r['account']}\n" for r in records)
        )
    result = run_batch(
        run_dag,
        tmp_path,
        records_uri=f"file://{source}",
        record_key="customer_id",
        data_template=DYNAMICS,
        max_active=2,
        deferrable=True,
    )
    assert result.states["batch"] == "success"
    assert starts_by_account(smartflows_emulator) == {r["account"]: 1 for r in records}
    first_line = 1 if fmt == "jsonl" else 2  # a CSV's header is line 1
    assert {line["key"]: line["line"] for line in manifest(tmp_path)} == {
        r["customer_id"]: n + first_line for n, r in enumerate(records)
    }


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        (
            '{"customer_id": "c1", "account": "a1"}\n{"customer_id": "c2", "account": "a2"}\n{"customer_id": oops}\n',
            "Line 3 of",
        ),
        (
            '{"customer_id": "c1", "account": "a1"}\n{"customer_id": "c2"}\n',
            "Line 2: data_template needs the field 'account'",
        ),
        (
            '{"customer_id": "c1", "account": "a1"}\n{"customer_id": "c2", "account": "a2"\n',
            "Line 2 of",
        ),
        (None, "Cannot read the records object"),
    ],
    ids=["malformed-line", "missing-template-field", "truncated-line", "unreadable-object"],
)
def test_bad_input_fails_with_the_line_before_starting_anything(
    run_dag: Any, smartflows_emulator: Any, tmp_path: Path, source: str | None, expected: str
) -> None:
    path = tmp_path / "records.jsonl"
    if source is not None:
        path.write_text(source)
    result = run_batch(run_dag, tmp_path, records_uri=f"file://{path}", data_template=DYNAMICS)
    assert result.states["batch"] == "failed"
    error = str(result.error("batch"))
    assert expected in error
    # One line number (not the decoder's own "line 2 column 1"), and what was started: nothing.
    assert " column 1 " not in error
    assert "line 2 column" not in error
    assert "Nothing at all was started" in error
    assert "nothing was started for it" not in error
    assert smartflows_emulator.executions == []


def test_two_records_with_one_key_fail_before_anything_starts(
    run_dag: Any, smartflows_emulator: Any, tmp_path: Path
) -> None:
    """Two records with one key would write one file (a document lost): refused, naming both lines."""
    records = [*customers(3), {"customer_id": "c002", "account": "acc-9"}]
    result = run_batch(
        run_dag,
        tmp_path,
        records=records,
        record_key="customer_id",
        data_template=DYNAMICS,
        destination=f"file://{tmp_path}/docs/{{record[customer_id]}}.pdf",
    )
    assert result.states["batch"] == "failed"
    error = str(result.error("batch"))
    assert "Line 4" in error
    assert "'c002'" in error
    assert "line 2" in error
    assert smartflows_emulator.executions == []


def test_xml_input_rendered_per_record_and_escaped(
    run_dag: Any, smartflows_emulator: Any, tmp_path: Path
) -> None:
    template = "<letter><to>{{ record.name }}</to><day>{{ ds }}</day><line>{{ line }}</line></letter>"
    records = [{"name": "Smith & Sons"}, {"name": "<Jones>"}]
    result = run_batch(run_dag, tmp_path, flow_id="xml-letter", records=records, xml_template=template)
    assert result.states["batch"] == "success"
    day = f"{result.dag_run.logical_date:%Y-%m-%d}"
    inputs = sorted(e["input_data"] for e in smartflows_emulator.executions)
    assert inputs == [
        f"<letter><to>&lt;Jones&gt;</to><day>{day}</day><line>2</line></letter>",
        f"<letter><to>Smith &amp; Sons</to><day>{day}</day><line>1</line></letter>",
    ]
    assert all(len(line["documents"]) == 2 for line in manifest(tmp_path))

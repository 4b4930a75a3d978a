"""Issue 25 on SmartFlowsRunFlowBatchOperator: ``flow_name=`` (resolved once per task), ``skip_user_input``, outputs in the manifest."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from airflow_provider_smartflows.exceptions import SmartFlowsFlowNameError, SmartFlowsInputError
from airflow_provider_smartflows.operators.batch import SmartFlowsRunFlowBatchOperator
from tests.operators.batch.batch_helpers import DYNAMICS, MODES, customers, manifest, run_batch

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.usefixtures("smartflows_conn")


@pytest.mark.slow  # a dag.test() run
@MODES
def test_the_name_is_resolved_once_for_every_record(
    run_dag: Any, smartflows_emulator: Any, tmp_path: Path, deferrable: bool
) -> None:
    result = run_batch(
        run_dag,
        tmp_path,
        flow_id=None,
        flow_name="INVOICE",  # neither id nor display name: found in the flow list
        records=customers(4),
        record_key="customer_id",
        data_template=DYNAMICS,
        max_active=2,
        deferrable=deferrable,
    )
    assert result.states["batch"] == "success", result.error("batch")
    assert smartflows_emulator.executions_started("invoice") == 4
    assert len(smartflows_emulator.requests_to("GET", r"/flows/INVOICE$")) == 1  # not once per record


@pytest.mark.slow  # a dag.test() run
def test_an_unknown_name_starts_nothing(run_dag: Any, smartflows_emulator: Any, tmp_path: Path) -> None:
    result = run_batch(
        run_dag, tmp_path, flow_id=None, flow_name="Invoyce", records=customers(2), data_template=DYNAMICS
    )
    assert isinstance(result.error("batch"), SmartFlowsFlowNameError)
    assert smartflows_emulator.executions_started() == 0


@pytest.mark.parametrize(
    "flows", [{"flow_id": "invoice", "flow_name": "Invoice"}, {}], ids=["both", "neither"]
)
def test_exactly_one_of_flow_id_and_flow_name(flows: dict[str, Any]) -> None:
    with pytest.raises(SmartFlowsInputError, match="flow_id or flow_name"):
        SmartFlowsRunFlowBatchOperator(task_id="t", manifest_uri="file:///m.jsonl", records=[], **flows)


@pytest.mark.slow  # a dag.test() run
def test_skip_user_input_starts_every_record_prompt_free(
    run_dag: Any, smartflows_emulator: Any, tmp_path: Path
) -> None:
    result = run_batch(
        run_dag,
        tmp_path,
        flow_id="approval",
        skip_user_input=True,
        records=customers(2),
        data_template=DYNAMICS,
    )
    assert result.states["batch"] == "success", result.error("batch")
    assert len(smartflows_emulator.requests_to("POST", r"/flows/executions/start$")) == 2


@pytest.mark.slow  # a dag.test() run
def test_each_manifest_line_carries_the_named_outputs(
    run_dag: Any, smartflows_emulator: Any, tmp_path: Path
) -> None:
    # issue 25, item 3
    smartflows_emulator.add_flow(
        {"id": "totals", "displayName": "Totals", "outputs": [{"displayName": "Total", "content": 42}]}
    )
    result = run_batch(run_dag, tmp_path, flow_id="totals", records=customers(2), data_template=DYNAMICS)
    assert result.states["batch"] == "success", result.error("batch")
    assert [line["outputs"] for line in manifest(tmp_path)] == [{"Total": 42}, {"Total": 42}]

"""Named flow outputs in the emulator (issue 25, item 3): a scenario flow declares them, a finished
execution carries them in the vendor's shape."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from airflow_provider_smartflows.emulator import ScenarioError
from airflow_provider_smartflows.emulator.scenario import parse_flow

if TYPE_CHECKING:
    from airflow_provider_smartflows.emulator import EmulatorServer

    from .helpers import Api

pytestmark = pytest.mark.airflow_agnostic  # the emulator's own behaviour, the same on every Airflow line

TOTALS = {
    "id": "totals",
    "displayName": "Totals",
    "steps": [{"message": "Compute", "seconds": 1}],
    "outputs": [
        {"id": "o1", "displayName": "Invoice total", "type": "number", "content": 1250.5},
        {"displayName": "Customer e-mail", "content": "ada@example.invalid"},
    ],
}


def test_a_finished_execution_carries_the_flows_outputs(emu: EmulatorServer, api: Api) -> None:
    emu.add_flow(TOTALS)
    final, execution = api.run("totals")
    assert final["status"] == "Success"
    assert execution["outputs"] == [
        {"output": {"id": "o1", "displayName": "Invoice total", "type": "number"}, "content": 1250.5},
        {
            "output": {"id": "output-1", "displayName": "Customer e-mail", "type": "string"},
            "content": "ada@example.invalid",
        },
    ]


def test_a_running_execution_has_no_outputs_yet(emu: EmulatorServer, api: Api) -> None:
    emu.add_flow({**TOTALS, "steps": [{"message": "Compute", "seconds": 3600}]})
    started = api.start("totals")
    assert api.get(f"/flows/executions/{started['id']}").json()["outputs"] == []


@pytest.mark.parametrize(
    ("outputs", "field"),
    [([{"content": 1}], "displayName"), ([{"displayName": "x", "size": 1}], "size"), ("x", "outputs")],
    ids=["no-name", "unknown-field", "not-a-list"],
)
def test_malformed_outputs_are_refused(outputs: Any, field: str) -> None:
    with pytest.raises(ScenarioError, match=field):
        parse_flow({"id": "f", "outputs": outputs})

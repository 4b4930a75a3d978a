"""Flows by name (issue 25, item 1): ``hook.resolve_flow`` over HTTP, and the matching rules."""

from __future__ import annotations

from typing import Any

import pytest

from airflow_provider_smartflows.exceptions import SmartFlowsFlowNameError, SmartFlowsInputError
from airflow_provider_smartflows.flow_names import check_flow_choice, match_flow_name


def test_a_display_name_resolves_through_get_flow(hook: Any, smartflows_emulator: Any) -> None:
    assert hook.resolve_flow("Invoice") == ("invoice", "Invoice")
    assert len(smartflows_emulator.requests_to("GET", r"/flows/Invoice$")) == 1
    assert smartflows_emulator.requests_to("GET", r"/flows$") == []


def test_an_id_resolves_through_get_flow(hook: Any) -> None:
    assert hook.resolve_flow("xml-letter") == ("xml-letter", "XML letter")


def test_another_case_is_found_in_the_flow_list(hook: Any, smartflows_emulator: Any) -> None:
    assert hook.resolve_flow("xml LETTER") == ("xml-letter", "XML letter")
    assert len(smartflows_emulator.requests_to("GET", r"/flows$")) >= 1


def test_a_name_with_a_slash_skips_get_flow(hook: Any, smartflows_emulator: Any) -> None:
    smartflows_emulator.add_flow({"id": "sub", "displayName": "Finance/Monthly invoice"})
    assert hook.resolve_flow("Finance/Monthly invoice") == ("sub", "Finance/Monthly invoice")


def test_an_unknown_name_lists_the_closest(hook: Any, smartflows_emulator: Any) -> None:
    with pytest.raises(
        SmartFlowsFlowNameError, match=r"No flow is named 'Invoise'.*Closest names: 'Invoice'"
    ):
        hook.resolve_flow("Invoise")
    assert smartflows_emulator.requests_to("POST", r"/flows/executions") == []


def test_two_flows_of_the_name_are_refused(hook: Any, smartflows_emulator: Any) -> None:
    smartflows_emulator.add_flow({"id": "twin-a", "displayName": "Twin"})
    smartflows_emulator.add_flow({"id": "twin-b", "displayName": "twin"})
    with pytest.raises(SmartFlowsFlowNameError, match=r"Several flows are named 'TWIN'.*twin-a.*twin-b"):
        hook.resolve_flow("TWIN")


@pytest.mark.airflow_agnostic
def test_the_exact_name_wins_over_another_case() -> None:
    flows = [{"id": "a", "displayName": "Report"}, {"id": "b", "displayName": "report"}]
    assert match_flow_name("report", flows) == ("b", "report")


@pytest.mark.airflow_agnostic
@pytest.mark.parametrize(
    ("flow_id", "flow_name", "refused"),
    [
        ("x", "X", True),
        ("x", None, False),
        (None, "X", False),
        (None, None, False),
        ("{{ a }}", "{{ b }}", True),
    ],
    ids=["both", "id", "name", "neither", "templates"],
)
def test_flow_id_and_flow_name_together_are_refused(flow_id: Any, flow_name: Any, refused: bool) -> None:
    if refused:
        with pytest.raises(SmartFlowsInputError, match="not both"):
            check_flow_choice(flow_id, flow_name, "t")
    else:
        check_flow_choice(flow_id, flow_name, "t")

"""The emulator's callback route: what resumes a Waiting execution, and what it refuses."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
import requests

from airflow_provider_smartflows.emulator.scenario import ScenarioError

if TYPE_CHECKING:
    from airflow_provider_smartflows.emulator import EmulatorServer

    from .helpers import Api

pytestmark = pytest.mark.airflow_agnostic  # the emulator's own behaviour, the same on every Airflow line


def waiting(api: Api) -> tuple[str, str]:
    """A ``signature`` execution once Waiting: (execution id, callback id from state.waitingFor)."""
    execution_id = api.start("signature")["id"]
    assert api.wait(execution_id, until={"Waiting"})["status"] == "Waiting"
    waiting_for = api.get(f"/flows/executions/{execution_id}").json()["state"]["waitingFor"]
    assert waiting_for["type"] == "callback"
    return execution_id, waiting_for["callbackId"]


@pytest.mark.parametrize(
    ("body", "content_type", "kept"),
    [
        (b'{"signed": true, "by": "Ada"}', "application/json", {"signed": True, "by": "Ada"}),
        (b"signed by Ada", "text/plain", "signed by Ada"),
        (b"", None, None),
    ],
    ids=["json", "text", "empty"],
)
def test_the_callback_body_is_the_waiting_stages_input(
    emu: EmulatorServer, api: Api, body: bytes, content_type: str | None, kept: Any
) -> None:
    execution_id, callback_id = waiting(api)
    headers = {"Content-Type": content_type} if content_type else {}
    r = requests.post(
        f"{emu.base_url}/api/v1/flows/callback/{callback_id}",
        params={"executionId": execution_id},
        data=body,
        headers=headers,
        timeout=10,
    )
    assert (r.status_code, r.text) == (200, "OK")
    assert api.wait(execution_id)["status"] == "Success"
    execution = api.get(f"/flows/executions/{execution_id}").json()
    assert execution["state"]["waitingFor"] is None
    assert [stage["input"] for stage in execution["state"]["stages"]] == [kept, None]


def test_a_refused_callback_names_what_was_wrong(emu: EmulatorServer, api: Api) -> None:
    execution_id, callback_id = waiting(api)
    url = f"{emu.base_url}/api/v1/flows/callback"
    wrong = requests.post(f"{url}/nope", params={"executionId": execution_id}, timeout=10)
    assert wrong.status_code == 404
    assert "nope" in wrong.json()["message"]
    emu.release(execution_id)
    late = requests.post(f"{url}/{callback_id}", params={"executionId": execution_id}, timeout=10)
    assert late.status_code == 409
    assert execution_id in late.json()["message"]
    assert "not Waiting" in late.json()["message"]


def test_a_flow_may_name_its_callback_id_and_executionid_picks_the_run(emu: EmulatorServer, api: Api) -> None:
    emu.add_flow(
        {
            "id": "esign",
            "steps": [{"message": "Send for signature", "seconds": 1}, {"message": "Archive", "seconds": 1}],
            "waiting": {"after_step": 0, "callback_id": "signed"},
        }
    )
    first, second = api.start("esign")["id"], api.start("esign")["id"]
    for execution_id in (first, second):
        api.wait(execution_id, until={"Waiting"})
        waiting_for = api.get(f"/flows/executions/{execution_id}").json()["state"]["waitingFor"]
        assert waiting_for == {"type": "callback", "callbackId": "signed"}
    url = f"{emu.base_url}/api/v1/flows/callback/signed"
    assert requests.post(url, params={"executionId": second}, timeout=10).status_code == 200
    assert api.wait(second)["status"] == "Success"
    assert api.progress(first)["status"] == "Waiting"
    other = requests.post(
        f"{emu.base_url}/api/v1/flows/callback/other", params={"executionId": first}, timeout=10
    )
    assert other.status_code == 404
    assert other.json()["message"] == f"Callback other not found for execution {first}"


def test_a_waiting_block_with_an_unknown_key_is_refused(emu: EmulatorServer) -> None:
    with pytest.raises(ScenarioError, match=r"waiting"):
        emu.add_flow({"id": "bad", "steps": [{"message": "m"}], "waiting": {"after_step": 0, "callbak": "x"}})

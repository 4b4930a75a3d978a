"""The emulator's callback route: what resumes a Waiting execution, and what it refuses."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
import requests

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

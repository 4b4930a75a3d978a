"""The Smart Flows API routes of the emulator, over real loopback HTTP."""

from __future__ import annotations

import json
import threading
from typing import TYPE_CHECKING, Any

import pytest
import requests

from .helpers import Api, find_documents

if TYPE_CHECKING:
    from airflow_provider_smartflows.emulator import EmulatorServer

pytestmark = pytest.mark.airflow_agnostic  # the emulator's own behaviour, the same on every Airflow line

DYNAMICS = {
    "id": ["INV-001", "INV-002"],
    "entity": "invoice",
    "userId": "u-1",
    "organizationUniqueName": "org",
}
XML = (
    b'<?xml version="1.0" encoding="utf-8"?><letter><to>Ada Lovelace</to><subject>Engines</subject></letter>'
)


# --- auth ----------------------------------------------------------------------------------


@pytest.mark.parametrize("header", ["X-API-Key", "X-API-KEY", "x-api-key", "x-Api-kEy"])
def test_any_header_case_authenticates(emu: EmulatorServer, header: str) -> None:
    r = requests.get(emu.base_url + "/api/v1/users/me", headers={header: emu.api_key}, timeout=10)
    assert r.status_code == 200
    assert r.json()["role"] == "admin"


@pytest.mark.parametrize(
    "key",
    [None, "no-such-key", "revoked"],
    ids=["missing", "unknown", "revoked"],
)
def test_bad_key_gets_401_without_echoing_it(emu: EmulatorServer, key: str | None) -> None:
    if key == "revoked":
        key = emu.revoked_key
    r = Api(emu, key).get("/system/info")
    assert r.status_code == 401
    body = r.json()
    assert body["status"] == 401
    assert body["error"] == "Unauthorized"
    assert body["message"]
    if key:
        assert key not in r.text


@pytest.mark.parametrize("path", ["/api/v1/users", "/_emulator/requests", "/_emulator/executions"])
def test_user_key_on_admin_route_gets_403(emu: EmulatorServer, path: str) -> None:
    r = requests.get(emu.base_url + path, headers={"X-API-Key": emu.user_key}, timeout=10)
    assert r.status_code == 403
    assert r.json()["status"] == 403


def test_admin_key_lists_users(api: Api) -> None:
    r = api.get("/users")
    assert r.status_code == 200
    assert {u["role"] for u in r.json()} == {"admin", "user"}


def test_users_me_and_system_info_reflect_the_key(user_api: Api) -> None:
    me = user_api.get("/users/me").json()
    assert me["role"] == "user"
    assert me["displayName"]
    info = user_api.get("/system/info").json()
    assert info["role"] == "user"
    assert info["version"] == "4.0.0-emulator"
    assert info["projectId"]
    assert info["displayName"]


def test_api_docs_and_swagger_ui_need_no_key(emu: EmulatorServer) -> None:
    docs = requests.get(emu.base_url + "/v3/api-docs", timeout=10)
    assert docs.status_code == 200
    spec = docs.json()
    assert spec["openapi"].startswith("3.")
    assert "get" in spec["paths"]["/api/v1/flows/executions/{exec_id}/progress"]
    assert "delete" in spec["paths"]["/api/v1/flows/executions/{exec_id}"]
    page = requests.get(emu.base_url + "/swagger-ui/", timeout=10)
    assert page.status_code == 200
    assert page.headers["Content-Type"].startswith("text/html")
    assert "/v3/api-docs" in page.text


def test_unknown_route_is_a_json_404(api: Api) -> None:
    r = api.get("/no/such/route")
    assert r.status_code == 404
    assert r.json()["status"] == 404


def test_request_log_redacts_the_key(emu: EmulatorServer, api: Api) -> None:
    api.get("/users/me")
    entry = emu.requests_to("GET", r"/users/me$")[-1]
    assert entry["status"] == 200
    assert entry["fault"] is None
    assert {k.lower(): v for k, v in entry["headers"].items()}["x-api-key"] == "***"
    assert emu.api_key not in json.dumps(emu.requests)


# --- flows ---------------------------------------------------------------------------------


def test_flows_list_is_a_plain_array_of_the_builtins(api: Api) -> None:
    flows = api.get("/flows").json()
    assert isinstance(flows, list)
    ids = {f["id"] for f in flows}
    assert {"hello", "invoice", "xml-letter", "approval", "signature", "archived"} <= ids
    assert all(f["type"] == "flow" for f in flows)


@pytest.mark.parametrize("ref", ["hello", "Hello"], ids=["by-id", "by-name"])
def test_get_flow(api: Api, ref: str) -> None:
    r = api.get(f"/flows/{ref}")
    assert r.status_code == 200
    assert r.json()["id"] == "hello"


def test_unknown_flow_is_404(api: Api) -> None:
    assert api.get("/flows/nope").status_code == 404
    r = api.post("/flows/executions", params={"flowId": "nope"})
    assert r.status_code == 404
    assert "nope" in r.json()["message"]


# --- starting ------------------------------------------------------------------------------


def test_start_returns_progress_and_records_dataset_and_priority(emu: EmulatorServer, api: Api) -> None:
    prog = api.start("hello", params={"datasetId": "ds-1", "priority": "high"})
    assert set(prog) >= {"id", "percentage", "currentData", "message", "status", "schema", "model", "form"}
    assert prog["currentData"] == {"id": "hello", "displayName": "Hello", "type": "flow"}
    assert prog["status"] in {"Running", "Success"}
    (record,) = emu.executions
    assert record["dataset_id"] == "ds-1"
    assert record["priority"] == "high"
    assert record["input_kind"] == "none"
    assert emu.executions_started("hello") == 1


def test_without_flow_id_the_execution_waits_in_select_flow(api: Api) -> None:
    prog = api.start(None)
    assert prog["status"] == "SelectFlow"
    assert "flowId" in prog["schema"]["properties"]
    assert api.progress(prog["id"], timeout=0.2)["status"] == "SelectFlow"
    r = api.post(f"/flows/executions/{prog['id']}/progress", json={"flowId": "hello"})
    assert r.status_code == 200
    assert api.wait(prog["id"])["status"] == "Success"


def test_dynamics_input_makes_one_document_per_record(api: Api) -> None:
    final, execution = api.run("invoice", json=DYNAMICS)
    assert final["status"] == "Success"
    names = sorted(d["displayName"] for d in find_documents(final["model"]))
    assert names == ["Invoice INV-001", "Invoice INV-002"]
    assert execution["state"]["inputData"] == DYNAMICS
    assert len({d["id"] for d in find_documents(execution["state"]["output"]["model"])}) == 2
    parts_docs = find_documents(execution["state"]["output"]["parts"])
    assert {d["id"] for d in parts_docs} == {d["id"] for d in find_documents(final["model"])}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b"{not json", "JSON"),
        (b"[1, 2]", "object"),
        (json.dumps({**DYNAMICS, "id": None}).encode(), "'id'"),
        (json.dumps({**DYNAMICS, "id": "INV-001"}).encode(), "'id'"),
        (json.dumps({**DYNAMICS, "id": []}).encode(), "'id'"),
        (json.dumps({**DYNAMICS, "id": ["a", 2]}).encode(), "'id'"),
        (json.dumps({k: v for k, v in DYNAMICS.items() if k != "entity"}).encode(), "'entity'"),
        (json.dumps({**DYNAMICS, "entity": 7}).encode(), "'entity'"),
        (json.dumps({**DYNAMICS, "userId": 7}).encode(), "'userId'"),
        (json.dumps({**DYNAMICS, "organizationUniqueName": ["x"]}).encode(), "'organizationUniqueName'"),
    ],
    ids=[
        "not-json",
        "array",
        "id-null",
        "id-string",
        "id-empty",
        "id-number",
        "no-entity",
        "entity-number",
        "userId-number",
        "org-list",
    ],
)
def test_bad_dynamics_json_is_400_naming_the_field(
    emu: EmulatorServer, api: Api, body: bytes, field: str
) -> None:
    r = api.post(
        "/flows/executions",
        params={"flowId": "invoice"},
        data=body,
        headers={"Content-Type": "application/json"},
    )
    assert r.status_code == 400
    assert field in r.json()["message"]
    assert emu.executions_started() == 0


def test_xml_input_gives_a_pdf_and_a_docx_under_file_properties(api: Api) -> None:
    final, execution = api.run(
        "xml-letter", data=XML, headers={"Content-Type": 'application/xml; charset="utf-8"'}
    )
    assert final["status"] == "Success"
    docs = find_documents(final["model"])
    assert sorted(d["displayName"] for d in docs) == ["Letter", "Letter"]
    assert "file" in json.dumps(final["model"])
    assert "Ada Lovelace" in execution["state"]["inputData"]


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (b"<letter><to>Ada</letter>", "not well-formed"),
        (b"<letter>", "not well-formed"),
        (b'<!DOCTYPE x [<!ENTITY e "boom">]><letter>&e;</letter>', "DOCTYPE"),
    ],
    ids=["mismatched-tag", "unclosed", "doctype"],
)
def test_bad_xml_is_400(api: Api, body: bytes, needle: str) -> None:
    r = api.post(
        "/flows/executions", params={"flowId": "xml-letter"}, data=body, headers={"Content-Type": "text/xml"}
    )
    assert r.status_code == 400
    assert needle in r.json()["message"]


@pytest.mark.parametrize(
    ("flow", "kw", "expects"),
    [
        ("hello", {"json": DYNAMICS}, "no input"),
        ("invoice", {}, "Dynamics"),
        ("invoice", {"data": XML, "headers": {"Content-Type": "application/xml"}}, "Dynamics"),
        ("xml-letter", {"json": DYNAMICS}, "XML"),
    ],
    ids=["none-got-json", "dynamics-got-none", "dynamics-got-xml", "xml-got-json"],
)
def test_input_kind_mismatch_is_400(api: Api, flow: str, kw: dict[str, Any], expects: str) -> None:
    r = api.post("/flows/executions", params={"flowId": flow}, **kw)
    assert r.status_code == 400
    assert expects in r.json()["message"]


def test_unsupported_content_type_is_415(api: Api) -> None:
    r = api.post(
        "/flows/executions", params={"flowId": "warning"}, data=b"hi", headers={"Content-Type": "text/plain"}
    )
    assert r.status_code == 415


def test_oversized_body_is_413(api: Api) -> None:
    r = api.post(
        "/flows/executions",
        params={"flowId": "warning"},
        data=b"<a>" + b" " * (11 * 1024 * 1024) + b"</a>",
        headers={"Content-Type": "application/xml"},
    )
    assert r.status_code == 413


def test_start_with_defaults_skips_user_input(api: Api) -> None:
    r = api.post("/flows/executions/start", params={"flow": "Approval"})
    assert r.status_code == 200
    execution = r.json()
    assert execution["flow"]["id"] == "approval"
    seen = {api.progress(execution["id"], timeout=5)["status"] for _ in range(3)}
    assert "UserInput" not in seen
    assert api.wait(execution["id"])["status"] == "Success"


# --- statuses ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flow", "status"),
    [
        ("hello", "Success"),
        ("warning", "Warning"),
        ("error", "Error"),
        ("interrupted", "Interrupted"),
        ("archived", "Archived"),
    ],
)
def test_final_statuses(api: Api, flow: str, status: str) -> None:
    final, execution = api.run(flow)
    assert final["status"] == status
    assert execution["status"] == status
    state = execution["state"]
    if status == "Warning":
        assert state["warnings"][0]["error"] == "DeliveryWarning"
        assert find_documents(final["model"])
    if status == "Error":
        (err,) = state["errors"]
        assert err["message"] == "Field CustomerName missing in data set"
        assert err["causes"]
        assert final["percentage"] < 100
        assert find_documents(execution) == []
    if status == "Interrupted":
        assert state["errors"]


def test_queued_then_running(emu: EmulatorServer, api: Api) -> None:
    emu.set_speedup(1)
    prog = api.start("queued")
    assert prog["status"] == "Queued"
    emu.set_speedup(100)
    nxt = api.progress(prog["id"], timeout=10)
    assert nxt["status"] in {"Running", "Success"}


def test_running_has_step_message_and_percentage(emu: EmulatorServer, api: Api) -> None:
    emu.set_speedup(1)
    prog = api.start("slow")
    assert prog["status"] == "Running"
    assert prog["message"] == "Step 1 of 10"
    assert prog["percentage"] == 9


def test_long_poll_returns_early_on_change(emu: EmulatorServer, api: Api) -> None:
    emu.set_speedup(10)  # 0.2 s per step of "slow"
    first = api.start("slow")
    timeout = 20
    nxt = api.progress(first["id"], timeout=timeout)
    assert nxt["percentage"] != first["percentage"]
    poll = emu.requests_to("GET", "/progress$")[-1]
    assert poll["status"] == 200
    # It answered on the change, not on the 20 s timeout: the flow is still running.
    assert nxt["status"] == "Running"


def test_long_poll_without_change_answers_after_timeout(api: Api) -> None:
    prog = api.start(None)
    again = api.progress(prog["id"], timeout=0.3)
    assert again["status"] == "SelectFlow"


def test_long_poll_with_bad_timeout_is_400(api: Api) -> None:
    prog = api.start(None)
    assert api.get(f"/flows/executions/{prog['id']}/progress", params={"timeout": "soon"}).status_code == 400


def _poll_in_thread(api: Api, execution_id: str, result: list[dict[str, Any]]) -> threading.Thread:
    def run() -> None:
        result.append(api.progress(execution_id, timeout=60))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def _wait_for_poll(emu: EmulatorServer, execution_id: str) -> None:
    """Block until the long-poll is parked in the server (the emulator counts them)."""
    for _ in range(5000):
        if any(e["id"] == execution_id and e["long_polls"] for e in emu.executions):
            return
    raise AssertionError("the long-poll never reached the server")


def test_user_input_form_and_answer(emu: EmulatorServer, api: Api) -> None:
    prog = api.start("approval")
    ui = api.wait(prog["id"], until={"UserInput"})
    assert set(ui["schema"]["properties"]) == {"approved", "comment"}
    assert {i["key"] for f in ui["form"] for i in f["items"]} == {"approved", "comment"}
    path = f"/flows/executions/{prog['id']}/progress"

    missing = api.post(path, json={"approved": True})
    assert missing.status_code == 400
    assert "comment" in missing.json()["message"]
    unknown = api.post(path, json={"approved": True, "comment": "ok", "extra": 1})
    assert unknown.status_code == 400
    assert "extra" in unknown.json()["message"]
    wrong_type = api.post(path, json={"approved": "yes", "comment": "ok"})
    assert wrong_type.status_code == 400
    assert "approved" in wrong_type.json()["message"]

    result: list[dict[str, Any]] = []
    poller = _poll_in_thread(api, prog["id"], result)
    _wait_for_poll(emu, prog["id"])
    ok = api.post(path, json={"approved": True, "comment": "fine"})
    assert ok.status_code == 200
    assert ok.json()["status"] != "UserInput"
    poller.join(timeout=30)
    assert result, "the long-poll did not return"
    assert result[0]["status"] != "UserInput"
    final = api.wait(prog["id"])
    assert final["status"] == "Success"
    execution = api.get(f"/flows/executions/{prog['id']}").json()
    assert execution["state"]["stages"][0]["input"] == {"approved": True, "comment": "fine"}
    assert len(execution["state"]["stages"]) == 2


def test_answer_when_not_waiting_for_input_is_409(api: Api) -> None:
    final, _ = api.run("hello")
    r = api.post(f"/flows/executions/{final['id']}/progress", json={"approved": True})
    assert r.status_code == 409


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_waiting_released_by_callback_without_key(emu: EmulatorServer, api: Api, method: str) -> None:
    prog = api.start("signature")
    waiting = api.wait(prog["id"], until={"Waiting"})
    assert waiting["status"] == "Waiting"
    execution = api.get(f"/flows/executions/{prog['id']}").json()
    callback_id = execution["state"]["waitingFor"]["callbackId"]
    url = f"{emu.base_url}/api/v1/flows/callback/{callback_id}"
    assert requests.request(method, url, params={"executionId": "other"}, timeout=10).status_code == 404
    r = requests.request(method, url, params={"executionId": prog["id"]}, timeout=10)
    assert r.status_code == 200
    assert api.wait(prog["id"])["status"] == "Success"
    assert requests.request(method, url, timeout=10).status_code == 409


def test_unknown_callback_is_404(emu: EmulatorServer) -> None:
    assert requests.get(f"{emu.base_url}/api/v1/flows/callback/nope", timeout=10).status_code == 404


def test_release_from_python(emu: EmulatorServer, api: Api) -> None:
    prog = api.start("signature")
    api.wait(prog["id"], until={"Waiting"})
    emu.release(prog["id"])
    assert api.wait(prog["id"])["status"] == "Success"
    with pytest.raises(ValueError, match="not Waiting"):
        emu.release(prog["id"])


@pytest.mark.parametrize("suffix", ["", "/progress"], ids=["execution", "progress"])
def test_cancel(emu: EmulatorServer, api: Api, suffix: str) -> None:
    emu.set_speedup(1)
    prog = api.start("slow")
    result: list[dict[str, Any]] = []
    poller = _poll_in_thread(api, prog["id"], result)
    _wait_for_poll(emu, prog["id"])
    r = api.delete(f"/flows/executions/{prog['id']}{suffix}")
    assert r.status_code == 200
    assert r.json()["status"] == "Canceled"
    poller.join(timeout=30)
    assert result
    assert result[0]["status"] == "Canceled"
    emu.set_speedup(1000)
    assert api.progress(prog["id"])["status"] == "Canceled"


def test_cancel_of_a_final_execution_changes_nothing(api: Api) -> None:
    final, _ = api.run("hello")
    r = api.delete(f"/flows/executions/{final['id']}")
    assert r.status_code == 200
    assert r.json()["status"] == "Success"


def test_cancel_in_select_flow(api: Api) -> None:
    prog = api.start(None)
    assert api.delete(f"/flows/executions/{prog['id']}/progress").json()["status"] == "Canceled"


def test_fail_first(emu: EmulatorServer, api: Api) -> None:
    assert api.run("flaky")[0]["status"] == "Error"
    assert api.run("flaky")[0]["status"] == "Success"
    emu.add_flow({"id": "twice", "steps": [], "fail_first": 2, "documents": [{"displayName": "T"}]})
    assert [api.run("twice")[0]["status"] for _ in range(3)] == ["Error", "Error", "Success"]


def test_every_known_status_is_reachable(emu: EmulatorServer, api: Api) -> None:
    """The ten statuses (and Archived) all show up across the built-in flows."""
    seen: set[str] = set()
    emu.set_speedup(1)
    seen.add(api.start("queued")["status"])
    seen.add(api.start("slow")["status"])
    seen.add(api.start(None)["status"])
    emu.set_speedup(1000)
    seen.add(api.wait(api.start("approval")["id"], until={"UserInput"})["status"])
    seen.add(api.wait(api.start("signature")["id"], until={"Waiting"})["status"])
    seen.add(api.delete(f"/flows/executions/{api.start(None)['id']}").json()["status"])
    for flow in ("hello", "warning", "error", "interrupted", "archived"):
        seen.add(api.run(flow)[0]["status"])
    assert seen == {
        "Queued",
        "Running",
        "Waiting",
        "UserInput",
        "Success",
        "Warning",
        "Error",
        "Canceled",
        "SelectFlow",
        "Interrupted",
        "Archived",
    }


# --- execution reads and lists -------------------------------------------------------------


def test_execution_shape(api: Api) -> None:
    final, execution = api.run("hello")
    assert execution["id"] == final["id"]
    assert execution["flow"] == {"id": "hello", "displayName": "Hello", "type": "flow"}
    assert set(execution) >= {
        "mode",
        "createdAt",
        "createdBy",
        "modifiedAt",
        "priority",
        "status",
        "state",
        "outputs",
    }
    assert set(execution["state"]) >= {
        "inputData",
        "output",
        "stages",
        "report",
        "errors",
        "warnings",
        "waitingFor",
    }
    status = api.get(f"/flows/executions/{final['id']}/status", params={"output": "x"})
    assert status.status_code == 200
    assert status.json()["status"] == "Success"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/flows/executions/nope"),
        ("GET", "/flows/executions/nope/status"),
        ("GET", "/flows/executions/nope/progress"),
        ("POST", "/flows/executions/nope/progress"),
        ("DELETE", "/flows/executions/nope"),
        ("DELETE", "/flows/executions/nope/progress"),
        ("GET", "/documents/nope"),
        ("GET", "/documents/nope/content"),
        ("GET", "/flows/nope/executions"),
    ],
)
def test_unknown_ids_are_404(api: Api, method: str, path: str) -> None:
    r = api.session.request(method, api.base + path, json={} if method == "POST" else None, timeout=10)
    assert r.status_code == 404
    assert "nope" in r.json()["message"]


def test_execution_list_paging_sort_filter(api: Api, user_api: Api) -> None:
    ids = [api.run("hello")[0]["id"] for _ in range(3)]
    api.run("error")
    user_api.run("hello")
    everything = api.get("/flows/executions", params={"size": 100}).json()
    assert isinstance(everything, list)
    assert len(everything) == 5
    page0 = api.get("/flows/executions", params={"size": 2, "page": 0, "sort": "createdAt,asc"}).json()
    page1 = api.get("/flows/executions", params={"size": 2, "page": 1, "sort": "createdAt,asc"}).json()
    assert [e["id"] for e in page0 + page1] == [*ids, page1[-1]["id"]]
    errors = api.get("/flows/executions", params={"filter": "status:Error"}).json()
    assert [e["flow"]["id"] for e in errors] == ["error"]
    hello = api.get("/flows/hello/executions").json()
    assert len(hello) == 4
    mine = user_api.get("/flows/executions").json()
    assert len(mine) == 1
    assert mine[0]["createdBy"]["id"] == "user"
    assert api.get("/flows/executions", params={"sort": "colour,asc"}).status_code == 400
    assert api.get("/flows/executions", params={"filter": "colour:red"}).status_code == 400
    assert api.get("/flows/executions", params={"size": "many"}).status_code == 400

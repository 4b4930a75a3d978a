"""The /_emulator admin routes and the Python API around them."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
import requests

from airflow_provider_smartflows.emulator import (
    DEFAULT_ADMIN_KEY,
    DEFAULT_REVOKED_KEY,
    DEFAULT_USER_KEY,
    EmulatorServer,
    ScenarioError,
)

from .helpers import Api, find_documents

pytestmark = pytest.mark.airflow_agnostic  # the emulator's own behaviour, the same on every Airflow line


class Admin:
    def __init__(self, emu: EmulatorServer) -> None:
        self.base = emu.base_url + "/_emulator"
        self.headers = {"X-API-Key": emu.api_key}

    def __call__(self, method: str, path: str, body: Any = None) -> requests.Response:
        return requests.request(method, self.base + path, json=body, headers=self.headers, timeout=30)


@pytest.fixture
def admin(emu: EmulatorServer) -> Admin:
    return Admin(emu)


def test_request_log_read_and_clear(admin: Admin, api: Api) -> None:
    api.get("/users/me")
    log = admin("GET", "/requests").json()
    assert [e["path"] for e in log] == ["/api/v1/users/me"]
    assert admin("DELETE", "/requests").status_code == 200
    assert [e["path"] for e in admin("GET", "/requests").json()] == ["/_emulator/requests"]


def test_faults_add_list_clear(admin: Admin, api: Api) -> None:
    r = admin("POST", "/faults", {"kind": "status", "status": 503, "path": "/users/me", "times": None})
    assert r.status_code == 201
    fault_id = r.json()["id"]
    assert api.get("/users/me").status_code == 503
    (listed,) = admin("GET", "/faults").json()
    assert listed["id"] == fault_id
    assert listed["hits"] == 1
    assert admin("DELETE", "/faults").status_code == 200
    assert api.get("/users/me").status_code == 200


def test_bad_fault_is_400_naming_the_field(admin: Admin) -> None:
    r = admin("POST", "/faults", {"kind": "status"})
    assert r.status_code == 400
    assert "status" in r.json()["message"]


def test_add_flow_then_run_it(admin: Admin, api: Api) -> None:
    flow = {
        "id": "custom",
        "displayName": "Custom",
        "steps": [{"message": "Only", "percentage": 50, "seconds": 0.1}],
        "final_status": "Warning",
        "documents": [{"displayName": "Out {record}", "contentType": "text/plain"}],
    }
    assert admin("POST", "/flows", flow).json() == {"id": "custom"}
    assert "custom" in {f["id"] for f in admin("GET", "/flows").json()}
    final, _ = api.run("custom")
    assert final["status"] == "Warning"
    (doc,) = find_documents(final["model"])
    assert doc["displayName"] == "Out"
    r = api.get(f"/documents/{doc['id']}/content")
    assert 'filename="Out.txt"' in r.headers["Content-Disposition"]
    assert b"Flow: Custom" in r.content


def test_bad_flow_is_400_naming_the_field(admin: Admin) -> None:
    r = admin("POST", "/flows", {"id": "x", "steps": [{"message": "a", "percentage": 150}]})
    assert r.status_code == 400
    assert "steps[0].percentage" in r.json()["message"]


def test_executions_sha256_speedup_and_reset(emu: EmulatorServer, admin: Admin, api: Api) -> None:
    final, _ = api.run("hello")
    (exe,) = admin("GET", "/executions").json()
    assert exe["id"] == final["id"]
    assert exe["status"] == "Success"
    (doc,) = find_documents(final["model"])
    digest = admin("GET", f"/documents/{doc['id']}/sha256").json()
    assert digest["sha256"] == emu.document_sha256(doc["id"])
    assert digest["size"] == emu.document_size(doc["id"])
    assert admin("PUT", "/speedup", {"speedup": 1}).status_code == 200
    assert api.start("slow")["status"] == "Running"
    assert admin("PUT", "/speedup", {"speedup": 0}).status_code == 400
    emu.add_flow({"id": "temp"})
    assert admin("POST", "/reset").status_code == 200
    assert admin("GET", "/executions").json() == []
    assert api.get("/flows/temp").status_code == 404
    assert api.get(f"/documents/{doc['id']}").status_code == 404


def test_release_route(admin: Admin, api: Api) -> None:
    prog = api.start("signature")
    api.wait(prog["id"], until={"Waiting"})
    assert admin("POST", f"/executions/{prog['id']}/release").status_code == 200
    assert api.wait(prog["id"])["status"] == "Success"
    assert admin("POST", f"/executions/{prog['id']}/release").status_code == 409


def test_purge_an_execution_and_a_document(emu: EmulatorServer, admin: Admin, api: Api) -> None:
    """The server's clean-up: after a purge the API answers 404 for it, as the vendor's does."""
    final, _ = api.run("hello")
    (doc,) = find_documents(final["model"])
    other, _ = api.run("hello")
    (other_doc,) = find_documents(other["model"])
    assert admin("DELETE", f"/documents/{other_doc['id']}").json() == {"purged": other_doc["id"]}
    assert api.get(f"/documents/{other_doc['id']}").status_code == 404
    assert api.get(f"/flows/executions/{other['id']}/progress").status_code == 200
    assert admin("DELETE", f"/executions/{final['id']}").json() == {"purged": final["id"]}
    assert api.get(f"/flows/executions/{final['id']}/progress").status_code == 404
    assert api.get(f"/flows/executions/{final['id']}").status_code == 404
    assert api.get(f"/documents/{doc['id']}").status_code == 404
    assert admin("DELETE", f"/executions/{final['id']}").status_code == 404
    assert admin("DELETE", f"/documents/{other_doc['id']}").status_code == 404
    running = api.start("slow")["id"]
    emu.purge_execution(running)
    assert api.get(f"/flows/executions/{running}/progress").status_code == 404
    with pytest.raises(KeyError):
        emu.purge_document("no-such-document")


def test_a_parked_long_poll_answers_404_when_its_execution_is_purged(admin: Admin, api: Api) -> None:
    import threading

    running = api.start("slow")["id"]
    answers: list[int] = []
    poll = threading.Thread(
        target=lambda: answers.append(
            api.get(f"/flows/executions/{running}/progress", params={"timeout": 20}).status_code
        )
    )
    poll.start()
    try:
        for _ in range(100):
            if any(ex["id"] == running and ex.get("long_polls") for ex in admin("GET", "/executions").json()):
                break
            threading.Event().wait(0.05)
        admin("DELETE", f"/executions/{running}")
    finally:
        poll.join(timeout=10)
    assert answers == [404]


# --- Python API and the pytest plugin ------------------------------------------------------


def test_default_keys(emu: EmulatorServer) -> None:
    assert (emu.api_key, emu.user_key, emu.revoked_key) == (
        DEFAULT_ADMIN_KEY,
        DEFAULT_USER_KEY,
        DEFAULT_REVOKED_KEY,
    )


def test_connection_json(emu: EmulatorServer) -> None:
    conn = json.loads(emu.connection_json(timeout=5))
    assert conn == {
        "conn_type": "smartflows",
        "host": emu.base_url,
        "password": emu.api_key,
        "extra": {"timeout": 5},
    }
    assert json.loads(emu.connection_json(key=emu.user_key))["password"] == emu.user_key


def test_smartflows_conn_fixture(
    smartflows_conn: str, emu: EmulatorServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    assert smartflows_conn == "smartflows_default"
    assert json.loads(os.environ["AIRFLOW_CONN_SMARTFLOWS_DEFAULT"])["host"] == emu.base_url


def test_fixture_starts_each_test_clean(emu: EmulatorServer) -> None:
    assert emu.requests == []
    assert emu.executions == []
    assert emu.faults == []


def test_scenario_keys_and_flows(tmp_path: Any) -> None:
    scenario = {
        "speedup": 100,
        "api_keys": [
            {"key": "k1", "user": "alice", "role": "admin"},
            {"key": "k2", "user": "bob", "role": "user"},
            {"key": "k3", "user": "carol", "revoked": True},
        ],
        "replace_default_flows": True,
        "flows": [{"id": "only", "steps": [{"message": "go", "percentage": 50, "seconds": 1}]}],
    }
    path = tmp_path / "scenario.json"
    path.write_text(json.dumps(scenario))
    with EmulatorServer(scenario=path) as server:
        assert (server.api_key, server.user_key, server.revoked_key) == ("k1", "k2", "k3")
        api = Api(server, "k2")
        assert api.get("/users/me").json()["displayName"] == "bob"
        assert [f["id"] for f in api.get("/flows").json()] == ["only"]
        assert api.run("only")[0]["status"] == "Success"
        assert Api(server, "k3").get("/users/me").status_code == 401
        assert Api(server, DEFAULT_ADMIN_KEY).get("/users/me").status_code == 401


def test_a_step_with_a_range_of_seconds_spreads_the_executions(admin: Admin, api: Api) -> None:
    flow = {"id": "varied", "steps": [{"message": "Only", "percentage": 50, "seconds": [5, 15]}]}
    assert admin("POST", "/flows", flow).json() == {"id": "varied"}
    ids = [api.start("varied")["id"] for _ in range(20)]
    executions = {e["id"]: e for e in admin("GET", "/executions").json()}
    durations = [executions[i]["duration"] for i in ids]
    assert all(5 <= d <= 15 for d in durations), durations
    # Evenly spread: every third of the range is used, and the mean is near the middle.
    assert {int((d - 5) // (10 / 3)) for d in durations} == {0, 1, 2}, durations
    assert abs(sum(durations) / len(durations) - 10) < 1.5, durations


@pytest.mark.parametrize(
    ("scenario", "field"),
    [
        ({"flows": [{"id": "x", "input": "csv"}]}, "flows[0].input"),
        ({"flows": [{"id": "x", "user_input": {"after_step": 3, "form": {"a": "boolean"}}}]}, "after_step"),
        (
            {
                "flows": [
                    {
                        "id": "x",
                        "steps": [{"message": "a"}],
                        "user_input": {"after_step": 0, "form": {"a": "date"}},
                    }
                ]
            },
            "form.a",
        ),
        ({"flows": [{"displayName": "no id"}]}, "flows[0].id"),
        ({"api_keys": [{"key": "k", "user": "u", "role": "user"}]}, "admin key"),
        ({"speedup": -1}, "speedup"),
        ({"colour": "red"}, "colour"),
        ({"flows": [{"id": "x", "steps": [{"message": "a", "seconds": [3, 1]}]}]}, "steps[0].seconds"),
    ],
    ids=["input", "after-step", "form-type", "flow-id", "no-admin", "speedup", "unknown-field", "range"],
)
def test_malformed_scenario_names_the_field(scenario: dict[str, Any], field: str) -> None:
    with pytest.raises(ScenarioError, match=re.escape(field)):
        EmulatorServer(scenario=scenario)


def test_two_servers_and_a_busy_port() -> None:
    with EmulatorServer() as first:
        with pytest.raises(OSError, match="address already in use"):
            EmulatorServer(port=first.port).start()
        with EmulatorServer() as second:
            assert second.base_url != first.base_url

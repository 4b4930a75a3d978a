"""Fault injection: every kind, matching, counting, seeding, and ``when="after"``."""

from __future__ import annotations

import http.client
import time

import pytest
import requests

from airflow_provider_smartflows.emulator import EmulatorServer, ScenarioError

from .helpers import Api, find_documents

pytestmark = pytest.mark.airflow_agnostic  # the emulator's own behaviour, the same on every Airflow line


def test_status_fault_with_retry_after_hits_times_then_stops(emu: EmulatorServer, api: Api) -> None:
    prog = api.start("hello")
    emu.add_fault("status", status=503, path="/progress$", retry_after=7, times=2)
    path = f"/flows/executions/{prog['id']}/progress"
    first, second, third = (api.get(path) for _ in range(3))
    assert [first.status_code, second.status_code, third.status_code] == [503, 503, 200]
    assert first.headers["Retry-After"] == "7"
    assert first.json()["status"] == 503
    assert [r["fault"] for r in emu.requests_to("GET", "/progress$")] == ["status", "status", None]


def test_429_with_http_date_retry_after(emu: EmulatorServer, api: Api) -> None:
    date = "Wed, 21 Oct 2015 07:28:00 GMT"
    emu.add_fault("status", status=429, retry_after=date, path="/users/me")
    r = api.get("/users/me")
    assert r.status_code == 429
    assert r.headers["Retry-After"] == date


def test_status_fault_applies_before_auth_like_a_proxy(emu: EmulatorServer) -> None:
    emu.add_fault("status", status=502)
    assert Api(emu, None).get("/users/me").status_code == 502


def test_html_fault(emu: EmulatorServer, api: Api) -> None:
    emu.add_fault("html", path="/system/info")
    r = api.get("/system/info")
    assert r.status_code == 502
    assert r.headers["Content-Type"].startswith("text/html")
    assert "502 Bad Gateway" in r.text
    with pytest.raises(requests.JSONDecodeError):
        r.json()


def test_invalid_json_fault(emu: EmulatorServer, api: Api) -> None:
    emu.add_fault("invalid_json", path="/users/me")
    r = api.get("/users/me")
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("application/json")
    with pytest.raises(requests.JSONDecodeError):
        r.json()


def test_latency_fault_delays_then_answers(emu: EmulatorServer, api: Api) -> None:
    emu.add_fault("latency", latency=0.3, path="/users/me")
    began = time.monotonic()
    r = api.get("/users/me")
    assert time.monotonic() - began >= 0.3
    assert r.status_code == 200
    assert emu.requests_to("GET", "/users/me")[-1]["fault"] == "latency"


def test_reset_fault_drops_the_connection(emu: EmulatorServer, api: Api) -> None:
    emu.add_fault("reset", path="/users/me")
    with pytest.raises(requests.ConnectionError):
        api.get("/users/me")
    entry = emu.requests_to("GET", "/users/me")[-1]
    assert entry["fault"] == "reset"
    assert entry["status"] is None
    assert api.get("/users/me").status_code == 200


@pytest.fixture
def document(api: Api) -> dict[str, str]:
    final, _ = api.run("hello")
    (doc,) = find_documents(final["model"])
    return doc


def _raw_get(emu: EmulatorServer, path: str) -> tuple[int, int, bytes, bool]:
    """(status, Content-Length, bytes read, complete?) with http.client to see partial bodies."""
    host, port = emu.base_url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    conn.request("GET", path, headers={"X-API-Key": emu.api_key})
    resp = conn.getresponse()
    length = int(resp.headers["Content-Length"])
    try:
        data = resp.read()
        complete = True
    except http.client.IncompleteRead as exc:
        data = exc.partial
        complete = False
    conn.close()
    return resp.status, length, data, complete


def test_truncate_fault_on_content_sends_half(emu: EmulatorServer, document: dict[str, str]) -> None:
    emu.add_fault("truncate", path="/content$")
    status, length, data, complete = _raw_get(emu, f"/api/v1/documents/{document['id']}/content")
    assert status == 200
    assert not complete
    assert len(data) == length // 2
    assert length == emu.document_size(document["id"])


def test_truncate_fault_with_byte_count(emu: EmulatorServer, document: dict[str, str]) -> None:
    emu.add_fault("truncate", path="/content$", body=100)
    _, _, data, complete = _raw_get(emu, f"/api/v1/documents/{document['id']}/content")
    assert not complete
    assert len(data) == 100
    assert data.startswith(b"%PDF-")


def test_truncate_fault_on_json_route(emu: EmulatorServer) -> None:
    emu.add_fault("truncate", path="/users/me")
    _, length, data, complete = _raw_get(emu, "/api/v1/users/me")
    assert not complete
    assert 0 < len(data) < length


@pytest.mark.parametrize(("body", "expected"), [(None, "Archived"), ("Paused", "Paused")])
def test_unknown_status_fault(emu: EmulatorServer, api: Api, body: str | None, expected: str) -> None:
    prog = api.start("hello")
    emu.add_fault("unknown_status", path="/progress$", body=body)
    faulted = api.progress(prog["id"])
    assert faulted["status"] == expected
    assert faulted["id"] == prog["id"]
    assert api.progress(prog["id"])["status"] != expected


@pytest.mark.parametrize(("kind", "status"), [("status", 500), ("reset", None)])
def test_start_fault_after_creates_the_execution(
    emu: EmulatorServer, api: Api, kind: str, status: int | None
) -> None:
    emu.add_fault(kind, status=status, method="POST", path="/flows/executions$", when="after")
    if kind == "reset":
        with pytest.raises(requests.ConnectionError):
            api.post("/flows/executions", params={"flowId": "hello"})
    else:
        assert api.post("/flows/executions", params={"flowId": "hello"}).status_code == 500
    assert emu.executions_started("hello") == 1
    assert len(emu.executions) == 1


@pytest.mark.parametrize(("kind", "status"), [("status", 500), ("reset", None)])
def test_start_fault_before_creates_nothing(
    emu: EmulatorServer, api: Api, kind: str, status: int | None
) -> None:
    emu.add_fault(kind, status=status, method="POST", path="/flows/executions$")
    if kind == "reset":
        with pytest.raises(requests.ConnectionError):
            api.post("/flows/executions", params={"flowId": "hello"})
    else:
        assert api.post("/flows/executions", params={"flowId": "hello"}).status_code == 500
    assert emu.executions_started() == 0
    assert api.get("/flows/hello/executions").json() == []
    assert emu.requests_to("POST", "/flows/executions$")[-1]["fault"] == kind


def _start_and_fail(api: Api, kind: str) -> None:
    """A start whose answer is a fault: a 500, or a reset connection."""
    invoice = {"id": ["r-1"], "entity": "account"}
    if kind == "reset":
        with pytest.raises(requests.ConnectionError):
            api.post("/flows/executions", params={"flowId": "invoice"}, json=invoice)
    else:
        assert api.post("/flows/executions", params={"flowId": "invoice"}, json=invoice).status_code == 500


@pytest.mark.parametrize(("kind", "status"), [("status", 500), ("reset", None)])
def test_start_fault_after_leaves_a_listed_execution_with_its_input(
    emu: EmulatorServer, api: Api, kind: str, status: int | None
) -> None:
    emu.add_fault(kind, status=status, method="POST", path="/flows/executions$", when="after")
    _start_and_fail(api, kind)
    (listed,) = api.get("/flows/invoice/executions", params={"filter": "createdBy:admin"}).json()
    assert listed["state"]["inputData"] == {"id": ["r-1"], "entity": "account"}


@pytest.mark.parametrize(("kind", "status"), [("status", 500), ("reset", None)])
def test_delayed_start_answers_at_once_and_creates_the_execution_later(
    emu: EmulatorServer, api: Api, kind: str, status: int | None
) -> None:
    emu.add_fault(kind, status=status, method="POST", path="/flows/executions$", when="delayed", delay=1.0)
    _start_and_fail(api, kind)
    (request,) = emu.requests_to("POST", "/flows/executions$")
    assert api.get("/flows/invoice/executions").json() == []  # not yet: 1 s is far away
    assert emu.executions_started() == 0
    emu.wait_deferred(timeout=30)
    (listed,) = api.get("/flows/invoice/executions").json()
    assert listed["state"]["inputData"] == {"id": ["r-1"], "entity": "account"}
    assert listed["createdBy"]["id"] == "admin"
    # Created when it appeared: at least the delay after the request (a lower bound only).
    assert listed["createdAt"] >= _plus_seconds(request["ts"], 1.0)
    assert emu.executions_started("invoice") == 1
    assert len(emu.requests_to("POST", "/flows/executions$")) == 1  # the late work is not a request
    assert emu.errors == []


def _plus_seconds(ts: str, seconds: float) -> str:
    from datetime import datetime, timedelta

    moved = datetime.fromisoformat(ts.replace("Z", "+00:00")) + timedelta(seconds=seconds)
    return moved.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def test_delayed_start_refused_later_creates_nothing(emu: EmulatorServer, api: Api) -> None:
    emu.add_fault("reset", method="POST", path="/flows/executions$", when="delayed", delay=0.1)
    with pytest.raises(requests.ConnectionError):
        api.post("/flows/executions", params={"flowId": "hello"}, json={"id": ["r-1"], "entity": "account"})
    emu.wait_deferred(timeout=30)  # the server then refuses it (hello takes no input): nothing
    assert emu.executions_started() == 0
    assert emu.errors == []


def test_reset_drops_a_pending_delayed_start(emu: EmulatorServer, api: Api) -> None:
    emu.add_fault("status", status=504, method="POST", path="/flows/executions$", when="delayed", delay=60)
    assert api.post("/flows/executions", params={"flowId": "hello"}).status_code == 504
    emu.reset()
    emu.wait_deferred(timeout=5)  # nothing pending any more: returns at once
    assert emu.executions == []


def test_wait_deferred_over_the_admin_route(emu: EmulatorServer, api: Api) -> None:
    emu.add_fault("reset", method="POST", path="/flows/executions$", when="delayed", delay=0.2)
    with pytest.raises(requests.ConnectionError):
        api.post("/flows/executions", params={"flowId": "hello"})
    r = requests.post(
        emu.base_url + "/_emulator/deferred/wait",
        json={"timeout": 30},
        headers={"X-API-Key": emu.api_key},
        timeout=60,
    )
    assert r.json() == {"pending": 0}
    assert emu.executions_started("hello") == 1


def test_flow_id_matching(emu: EmulatorServer, api: Api) -> None:
    hello = api.start("hello")
    err = api.start("error")
    emu.add_fault("status", status=503, flow_id="error", times=None)
    assert api.get(f"/flows/executions/{hello['id']}").status_code == 200
    assert api.get(f"/flows/executions/{err['id']}").status_code == 503
    assert api.post("/flows/executions", params={"flowId": "error"}).status_code == 503
    assert api.post("/flows/executions", params={"flowId": "hello"}).status_code == 200


def test_after_skips_the_first_matches_and_times_none_hits_all(emu: EmulatorServer, api: Api) -> None:
    emu.add_fault("status", status=500, path="/users/me", after=2, times=None)
    codes = [api.get("/users/me").status_code for _ in range(5)]
    assert codes == [200, 200, 500, 500, 500]


def test_probability_is_deterministic_per_seed(emu: EmulatorServer, api: Api) -> None:
    def pattern() -> list[int]:
        emu.add_fault("status", status=503, path="/users/me", times=None, probability=0.5)
        return [api.get("/users/me").status_code for _ in range(30)]

    first = pattern()
    emu.reset()  # reseeds the RNG
    second = pattern()
    assert first == second
    assert set(first) == {200, 503}


def test_admin_routes_are_never_faulted(emu: EmulatorServer) -> None:
    emu.add_fault("status", status=500, times=None)
    r = requests.get(emu.base_url + "/_emulator/requests", headers={"X-API-Key": emu.api_key}, timeout=10)
    assert r.status_code == 200


def test_faults_from_a_scenario_come_back_after_reset() -> None:
    scenario = {"faults": [{"kind": "status", "status": 503, "path": "/users/me", "times": 1}]}
    with EmulatorServer(scenario=scenario) as server:
        api = Api(server, server.api_key)
        assert api.get("/users/me").status_code == 503
        assert api.get("/users/me").status_code == 200
        server.reset()
        assert api.get("/users/me").status_code == 503


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"kind": "explode"}, "kind"),
        ({"kind": "status"}, "status"),
        ({"kind": "latency"}, "latency"),
        ({"kind": "status", "status": 503, "when": "later"}, "when"),
        ({"kind": "status", "status": 503, "probability": 2}, "probability"),
        ({"kind": "reset", "when": "delayed"}, "delay"),
        ({"kind": "reset", "delay": 1.0}, "delay"),
        ({"kind": "truncate", "when": "delayed", "delay": 1.0}, "kind"),
        ({"kind": "reset", "when": "delayed", "delay": -1}, "delay"),
    ],
    ids=[
        "kind",
        "status-missing",
        "latency-missing",
        "when",
        "probability",
        "delay-missing",
        "delay-without-delayed",
        "delayed-truncate",
        "delay-negative",
    ],
)
def test_bad_fault_is_refused(emu: EmulatorServer, kwargs: dict[str, object], field: str) -> None:
    kind = str(kwargs.pop("kind"))
    with pytest.raises(ScenarioError, match=field):
        emu.add_fault(kind, **kwargs)  # type: ignore[arg-type]

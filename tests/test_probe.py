"""smartflows-probe against the emulator: what it reports, that it only GETs, and its errors."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import TYPE_CHECKING, Any

import pytest
import requests

from airflow_provider_smartflows.probe import described_routes, long_poll_verdict, main

if TYPE_CHECKING:
    from airflow_provider_smartflows.emulator import EmulatorServer

FINAL = {"Success", "Warning", "Error", "Canceled", "Interrupted"}
CANCEL_PROGRESS = "DELETE /api/v1/flows/executions/{exec_id}/progress"
FLOW_EXECUTIONS = "GET /api/v1/flows/{flow}/executions"


def finished_executions(emu: EmulatorServer, count: int, flow: str = "hello") -> list[str]:
    """Start ``count`` executions (before the probe runs) and wait until each has finished."""
    headers = {"X-API-Key": emu.api_key}
    api = emu.base_url + "/api/v1/flows/executions"
    ids = [
        requests.post(api, params={"flowId": flow}, headers=headers, timeout=10).json()["id"]
        for _ in range(count)
    ]
    for execution_id in ids:
        for _ in range(50):
            progress = requests.get(
                f"{api}/{execution_id}/progress", params={"timeout": 5}, headers=headers, timeout=10
            )
            if progress.json()["status"] in FINAL:
                break
        else:
            raise AssertionError(f"execution {execution_id} did not finish")
    return ids


@pytest.fixture
def run_probe(
    smartflows_emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Any:
    """Run ``smartflows-probe`` in process on connection ``sf_probe``; (exit code, out, err, its requests)."""

    def run(*args: str, key: str | None = None, **extra: Any) -> tuple[int, str, str, list[dict[str, Any]]]:
        monkeypatch.setenv("AIRFLOW_CONN_SF_PROBE", smartflows_emulator.connection_json(key, **extra))
        before = len(smartflows_emulator.requests)
        capsys.readouterr()
        code = main(["--conn-id", "sf_probe", "--long-poll-seconds", "1", *args])
        out, err = capsys.readouterr()
        return code, out, err, smartflows_emulator.requests[before:]

    return run


def test_reports_server_routes_paging_long_poll_and_extras(smartflows_emulator, run_probe):
    finished_executions(smartflows_emulator, 2)
    code, out, _, sent = run_probe()
    assert code == 0, out
    assert "version 4.0.0-emulator, project emulator" in out
    assert "API key of admin (role admin)" in out
    assert "API description: /v3/api-docs; Swagger UI: /swagger-ui/" in out
    assert "MISSING" not in out
    assert "PROBLEM" not in out
    assert "'timeout' listed in the API description; answered in" in out
    assert json.loads(out.split("Connection extras to set (JSON):\n", 1)[1]) == {"cancel_path": "progress"}
    assert {entry["method"] for entry in sent} == {"GET"}


def test_only_gets_and_never_a_change(smartflows_emulator, run_probe):
    ids = finished_executions(smartflows_emulator, 1)
    run_probe()
    paths = {entry["path"] for entry in smartflows_emulator.requests}
    assert f"/api/v1/flows/executions/{ids[0]}/progress" in paths
    writes = [e for e in smartflows_emulator.requests if e["method"] != "GET"]
    assert [(e["method"], e["path"]) for e in writes] == [("POST", "/api/v1/flows/executions")]  # the setup's
    assert smartflows_emulator.executions_started() == 1


def test_a_described_server_lacking_routes_names_them_with_their_features(smartflows_emulator, run_probe):
    finished_executions(smartflows_emulator, 1)
    smartflows_emulator.set_api(description="v2", drop_routes=[CANCEL_PROGRESS, FLOW_EXECUTIONS])
    code, out, _, sent = run_probe()
    assert code == 1
    assert "API description: /v2/api-docs" in out
    assert "MISSING GET /api/v1/flows/{flow_id}/executions  (reconciling a start that got no answer)" in out
    assert "PROBLEM: The server lacks GET /api/v1/flows/{flow_id}/executions" in out
    assert "PROBLEM: connection 'sf_probe' cancels through cancel_path \"progress\"" in out
    assert json.loads(out.split("(JSON):\n", 1)[1]) == {"cancel_path": "execution"}
    assert {entry["method"] for entry in sent} == {"GET"}


def test_the_connections_own_cancel_path_is_fine_when_listed(smartflows_emulator, run_probe):
    smartflows_emulator.set_api(drop_routes=[CANCEL_PROGRESS])
    code, out, _, _ = run_probe(cancel_path="execution")
    assert code == 0, out
    assert json.loads(out.split("(JSON):\n", 1)[1]) == {"cancel_path": "execution"}


def test_a_server_without_a_description(smartflows_emulator, run_probe):
    smartflows_emulator.set_api(description="none")
    code, out, _, sent = run_probe()
    assert code == 0
    assert "API description: not served; Swagger UI: not served" in out
    assert "the routes and the cancel path could not be checked" in out
    assert "Connection extras to set: none could be told" in out
    assert "Long-poll: not checked: the listing shows no finished execution" in out
    assert {e["path"] for e in sent} >= {"/v3/api-docs", "/v2/api-docs", "/swagger-ui/", "/swagger-ui.html"}


@pytest.mark.parametrize(
    ("cap", "expected", "code"),
    [
        (None, "Paging: default page size 20; 25 items when asked for 100 (the whole listing)", 0),
        (20, "Note: GET /api/v1/flows/executions holds 20 items per page whatever 'size' asks", 0),
        (10, "PROBLEM: GET /api/v1/flows/executions holds at most 10 items per page when asked for 100", 1),
    ],
    ids=["honours-size", "ignores-size", "caps-size"],
)
def test_page_size_the_server_answers_with(smartflows_emulator, run_probe, cap, expected, code):
    finished_executions(smartflows_emulator, 25)
    if cap is not None:
        smartflows_emulator.set_api(page_cap=cap)
    got, out, _, _ = run_probe()
    assert expected in out
    assert got == code


def test_a_progress_call_refusing_the_long_poll_is_a_problem(smartflows_emulator, run_probe):
    finished_executions(smartflows_emulator, 1)
    smartflows_emulator.add_fault("status", method="GET", path="/progress$", status=400, times=None)
    code, out, _, _ = run_probe()
    assert code == 1
    assert (
        "PROBLEM: GET /api/v1/flows/executions/{execution_id}/progress?timeout=1 failed on a finished execution (400)"
        in out
    )


def test_a_server_without_the_executions_listing_still_gets_a_report(smartflows_emulator, run_probe):
    smartflows_emulator.set_api(drop_routes=["GET /api/v1/flows/executions"])
    code, out, _, _ = run_probe()
    assert code == 1
    assert "PROBLEM: The server lacks GET /api/v1/flows/executions: list_executions" in out
    assert "Paging: not checked: the executions listing failed" in out
    assert "Connection extras to set (JSON):" in out


def test_json_output(smartflows_emulator, run_probe):
    code, out, _, _ = run_probe("--json")
    report = json.loads(out)
    assert code == 0
    assert report["server"]["role"] == "admin"
    assert report["extras"] == {"cancel_path": "progress"}


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        ({"key": "revoked"}, "refused the API key of connection 'sf_probe'"),
        ({"fault": 403}, "lacks the rights for GET /users/me"),
    ],
    ids=["bad-key", "no-rights"],
)
def test_errors_say_what_failed(smartflows_emulator, run_probe, setup, message):
    key = smartflows_emulator.revoked_key if setup.get("key") else None
    if "fault" in setup:
        smartflows_emulator.add_fault("status", path="/users/me$", status=setup["fault"])
    code, out, err, _ = run_probe(key=key)
    assert code == 2
    assert out == ""
    assert message in err
    assert smartflows_emulator.revoked_key not in err


def test_unreachable_and_tls_errors(monkeypatch, capsys, smartflows_emulator):
    plain = smartflows_emulator.base_url.replace("http://", "https://")
    for host, reason in (("http://127.0.0.1:9", "connection refused"), (plain, "TLS")):
        monkeypatch.setenv(
            "AIRFLOW_CONN_SF_GONE", json.dumps({"conn_type": "smartflows", "host": host, "password": "k"})
        )
        assert main(["--conn-id", "sf_gone"]) == 2
        err = capsys.readouterr().err
        assert "could not probe connection 'sf_gone': Could not complete GET /users/me" in err
        assert reason in err
        assert "Check that the server is up" in err


def test_an_unknown_connection(capsys):
    assert main(["--conn-id", "no_such_probe_conn"]) == 2
    assert "there is no connection 'no_such_probe_conn'" in capsys.readouterr().err


def test_runs_as_a_module():
    done = subprocess.run(
        [sys.executable, "-m", "airflow_provider_smartflows.probe", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "--conn-id" in done.stdout


# --------------------------------------------------------------------------- pure parts


def test_swagger2_base_path_and_openapi3_server_url_are_prefixed():
    v2 = {
        "swagger": "2.0",
        "basePath": "/api/v1/",
        "paths": {"/flows": {"get": {"parameters": [{"name": "page", "in": "query"}]}}},
    }
    v3 = {
        "servers": [{"url": "https://x.example/api/v1"}],
        "paths": {"/flows/executions/{executionId}": {"delete": {}}},
    }
    assert described_routes(v2) == {"GET /api/v1/flows": {"page"}}
    assert described_routes(v3) == {"DELETE /api/v1/flows/executions/{}": set()}


def test_a_held_long_poll_is_told_apart_from_an_early_answer():
    assert "held the request 2.0 s of the 2 s asked" in long_poll_verdict(2.0, 2.0, None)
    assert long_poll_verdict(0.01, 2.0, False).startswith(
        "'timeout' NOT listed in the API description; answered"
    )

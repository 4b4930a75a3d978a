"""What the emulator offers as a server: its API description (v3, v2, none), routes it lacks, its
page cap; set through EmulatorServer.set_api, the admin route and the command line."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
import requests

from .test_cli import launch, stop

pytestmark = pytest.mark.airflow_agnostic  # the emulator's own behaviour, the same on every Airflow line

if TYPE_CHECKING:
    from airflow_provider_smartflows.emulator import EmulatorServer

    from .helpers import Api

CANCEL_PROGRESS = "DELETE /api/v1/flows/executions/{exec_id}/progress"


def spec(emu: EmulatorServer, version: str = "v3") -> requests.Response:
    return requests.get(f"{emu.base_url}/{version}/api-docs", timeout=10)


def test_the_description_lists_each_routes_query_parameters(emu: EmulatorServer) -> None:
    paths = spec(emu).json()["paths"]
    listing = paths["/api/v1/flows/{flow}/executions"]["get"]["parameters"]
    assert {p["name"] for p in listing if p["in"] == "query"} == {"page", "size", "sort", "filter"}
    progress = paths["/api/v1/flows/executions/{exec_id}/progress"]["get"]["parameters"]
    assert {p["name"] for p in progress if p["in"] == "query"} == {"timeout"}
    assert {p["name"] for p in paths["/api/v1/flows"]["get"]["parameters"]} >= {"page", "size"}
    assert not any(path.startswith("/_emulator") for path in paths)


def test_swagger2_description_instead(emu: EmulatorServer) -> None:
    emu.set_api(description="v2")
    assert spec(emu).status_code == 404
    body = spec(emu, "v2").json()
    assert body["swagger"] == "2.0"
    assert body["basePath"] == "/api/v1"
    assert "delete" in body["paths"]["/flows/executions/{exec_id}/progress"]
    page = requests.get(emu.base_url + "/swagger-ui/", timeout=10)
    assert "/v2/api-docs" in page.text


def test_no_description_at_all(emu: EmulatorServer) -> None:
    emu.set_api(description="none")
    for path in ("/v3/api-docs", "/v2/api-docs", "/swagger-ui/", "/swagger-ui.html"):
        assert requests.get(emu.base_url + path, timeout=10).status_code == 404, path


def test_a_dropped_route_is_left_out_and_answers_like_a_server_without_it(
    emu: EmulatorServer, api: Api
) -> None:
    emu.set_api(drop_routes=[CANCEL_PROGRESS, "GET /api/v1/flows/{flow}/executions"])
    paths = spec(emu).json()["paths"]
    assert "delete" not in paths["/api/v1/flows/executions/{exec_id}/progress"]
    assert "/api/v1/flows/{flow}/executions" not in paths
    execution_id = api.start("hello")["id"]
    refused = api.delete(f"/flows/executions/{execution_id}/progress")
    assert refused.status_code == 405
    assert refused.headers["Allow"] == "GET, POST"
    assert api.get("/flows/hello/executions").status_code == 404
    assert api.delete(f"/flows/executions/{execution_id}").status_code == 200  # the other cancel route


def test_reset_restores_everything(emu: EmulatorServer) -> None:
    emu.set_api(description="none", drop_routes=[CANCEL_PROGRESS], page_cap=3)
    emu.reset()
    assert "delete" in spec(emu).json()["paths"]["/api/v1/flows/executions/{exec_id}/progress"]


@pytest.mark.parametrize(
    "body",
    [
        {"description": "v4"},
        {"drop_routes": ["DELETE /api/v1/nope"]},
        {"drop_routes": "GET /api/v1/flows"},
        {"page_cap": 0},
        {"colour": "red"},
    ],
    ids=["description", "unknown-route", "not-a-list", "cap-zero", "unknown-field"],
)
def test_admin_route_refuses_bad_settings(emu: EmulatorServer, body: dict[str, object]) -> None:
    r = requests.put(
        emu.base_url + "/_emulator/api", json=body, headers={"X-API-Key": emu.api_key}, timeout=10
    )
    assert r.status_code == 400
    assert r.json()["message"]


def test_admin_route_sets_and_shows(emu: EmulatorServer) -> None:
    headers = {"X-API-Key": emu.api_key}
    body = {"description": "v2", "drop_routes": [CANCEL_PROGRESS], "page_cap": 5}
    assert (
        requests.put(emu.base_url + "/_emulator/api", json=body, headers=headers, timeout=10).json() == body
    )
    assert requests.get(emu.base_url + "/_emulator/api", headers=headers, timeout=10).json() == body
    assert spec(emu).status_code == 404


def test_cli_flags() -> None:
    cli = launch("--quiet", "--api-docs", "none", "--drop-route", CANCEL_PROGRESS, "--page-cap", "1")
    try:
        assert requests.get(cli.url + "/v3/api-docs", timeout=10).status_code == 404
        assert cli.api("GET", "/_emulator/api").json() == {
            "description": "none",
            "drop_routes": [CANCEL_PROGRESS],
            "page_cap": 1,
        }
        assert len(cli.api("GET", "/api/v1/flows").json()) == 1
    finally:
        assert stop(cli) == 0


def test_cli_refuses_an_unknown_route() -> None:
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "airflow_provider_smartflows.emulator", "--drop-route", "GET /api/v1/nope"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "no such route(s) to drop: GET /api/v1/nope" in done.stderr

"""The emulator's document listings (GET /documents paged at 20, POST /documents/filter) and the
admin routes that set when documents expire."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import pytest
import requests

from .helpers import Api, find_documents

if TYPE_CHECKING:
    from airflow_provider_smartflows.emulator import EmulatorServer

pytestmark = pytest.mark.airflow_agnostic  # the emulator's own behaviour, the same on every Airflow line

MANY = {
    "id": "t-many",
    "steps": [{"message": "m", "percentage": 50, "seconds": 0.01}],
    "documents": [{"displayName": f"Doc {n:02d}"} for n in range(25)],
}


def when(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def admin_put(emu: EmulatorServer, path: str, body: Any) -> requests.Response:
    return requests.put(emu.base_url + path, json=body, headers={"X-API-Key": emu.api_key}, timeout=30)


def test_list_is_paged_at_20_by_default(api: Api, emu: EmulatorServer) -> None:
    emu.add_flow(MANY)
    api.run("t-many")
    first = api.get("/documents").json()
    second = api.get("/documents", params={"page": 1}).json()
    assert (len(first), len(second)) == (20, 5)
    assert {d["id"] for d in first}.isdisjoint(d["id"] for d in second)
    assert set(first[0]) >= {
        "id",
        "displayName",
        "expiration",
        "finished",
        "origin",
        "templateId",
        "language",
    }


def test_a_plain_user_lists_only_its_own_documents(api: Api, user_api: Api) -> None:
    api.run("hello")
    user_api.run("hello")
    assert len(api.get("/documents").json()) == 2
    assert len(user_api.get("/documents").json()) == 1


def test_filter_by_group(api: Api) -> None:
    api.run("xml-letter", data="<root/>", headers={"Content-Type": "application/xml"})
    body = {
        "group": {
            "type": "and",
            "nodes": [
                {
                    "id": "n",
                    "condition": {"key": "contentType", "operator": "in", "values": ["application/pdf"]},
                }
            ],
        }
    }
    found = api.post("/documents/filter", json=body).json()
    assert [d["contentType"] for d in found] == ["application/pdf"]


@pytest.mark.parametrize(
    "body",
    [
        {"nodes": []},
        {"group": {"type": "xor", "nodes": []}},
        {"group": {"nodes": [{"condition": {"key": "nope", "operator": "in", "values": []}}]}},
        {"group": {"nodes": [{"condition": {"key": "id", "operator": "like", "values": ["x"]}}]}},
    ],
    ids=["no-group", "bad-type", "unknown-key", "unknown-operator"],
)
def test_a_malformed_filter_is_400(api: Api, body: Any) -> None:
    api.run("hello")
    assert api.post("/documents/filter", json=body).status_code == 400


def test_retention_sets_the_expiration(api: Api, emu: EmulatorServer) -> None:
    assert admin_put(emu, "/_emulator/documents/retention", {"seconds": 120}).status_code == 200
    final, _ = api.run("hello")
    (ref,) = find_documents(final["model"])
    meta = api.get(f"/documents/{ref['id']}").json()
    assert 119 <= (when(meta["expiration"]) - when(meta["createdAt"])).total_seconds() <= 121


def test_one_documents_expiration_can_be_moved_into_the_past(api: Api, emu: EmulatorServer) -> None:
    final, _ = api.run("hello")
    (ref,) = find_documents(final["model"])
    answer = admin_put(emu, f"/_emulator/documents/{ref['id']}/expiration", {"in_seconds": -30})
    assert answer.status_code == 200
    meta = api.get(f"/documents/{ref['id']}").json()
    assert when(meta["expiration"]) < datetime.now(timezone.utc)
    # Expired but not yet cleaned up: the content still answers, as on the server until its clean-up.
    assert api.get(f"/documents/{ref['id']}/content").status_code == 200


def test_bad_admin_expiry_values_are_400(emu: EmulatorServer) -> None:
    assert admin_put(emu, "/_emulator/documents/retention", {"seconds": -1}).status_code == 400
    assert admin_put(emu, "/_emulator/documents/nope/expiration", {"in_seconds": 1}).status_code == 404


def test_reset_restores_the_retention(api: Api, emu: EmulatorServer) -> None:
    emu.set_document_retention(5)
    emu.reset()
    final, _ = api.run("hello")
    (ref,) = find_documents(final["model"])
    meta = api.get(f"/documents/{ref['id']}").json()
    assert (when(meta["expiration"]) - when(meta["createdAt"])).days == 7

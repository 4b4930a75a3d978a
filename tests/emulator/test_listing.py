"""Execution listings: createdAt / createdBy / inputData, paging, sorting and filtering."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from airflow_provider_smartflows.emulator import EmulatorServer

    from .helpers import Api

pytestmark = pytest.mark.airflow_agnostic  # the emulator's own behaviour, the same on every Airflow line

XML = '<?xml version="1.0" encoding="UTF-8"?>\n<letter>\n  <to>Ann</to>\n</letter>\n'
DYNAMICS = {"id": ["r-1", "r-2"], "entity": "account", "userId": "u-9"}


def listing(api: Api, path: str = "/flows/executions", **params: Any) -> list[dict[str, Any]]:
    r = api.get(path, params=params)
    assert r.status_code == 200, r.text
    body = r.json()
    assert isinstance(body, list)  # a plain array, no paging envelope
    return body


def start_many(api: Api, count: int, flow: str = "hello") -> list[str]:
    return [api.start(flow)["id"] for _ in range(count)]


@pytest.mark.parametrize(
    ("flow", "kw", "expected"),
    [
        ("hello", {}, None),
        ("invoice", {"json": DYNAMICS}, DYNAMICS),
        ("xml-letter", {"data": XML.encode(), "headers": {"Content-Type": "application/xml"}}, XML),
    ],
    ids=["no-body", "json-by-value", "xml-as-sent"],
)
def test_listed_execution_carries_its_input_creator_and_creation_time(
    api: Api, flow: str, kw: dict[str, Any], expected: Any
) -> None:
    started = api.start(flow, **kw)
    (item,) = listing(api, f"/flows/{flow}/executions")
    assert item["id"] == started["id"]
    assert item["state"]["inputData"] == expected
    assert item["createdBy"]["id"] == "admin"
    assert item["createdAt"].endswith("Z")
    assert api.get(f"/flows/executions/{started['id']}").json()["createdAt"] == item["createdAt"]


def test_newest_first_by_default_and_pages_cover_everything_once(api: Api) -> None:
    ids = start_many(api, 7)
    pages = [listing(api, size=3, page=n) for n in range(4)]
    assert [len(p) for p in pages] == [3, 3, 1, 0]
    assert [e["id"] for p in pages for e in p] == ids[::-1]
    explicit = [e["id"] for e in listing(api, size=100, sort="createdAt,desc")]
    assert explicit == ids[::-1]


def test_ascending_is_the_creation_order(api: Api) -> None:
    ids = start_many(api, 5)
    assert [e["id"] for e in listing(api, sort="createdAt,asc")] == ids
    assert [e["id"] for e in listing(api, sort="createdAt")] == ids  # no direction: ascending


def test_default_page_size_is_20(api: Api) -> None:
    start_many(api, 21)
    assert len(listing(api)) == 20
    assert len(listing(api, page=1)) == 1


def test_filter_by_creator(api: Api, user_api: Api) -> None:
    mine = start_many(api, 2)
    theirs = start_many(user_api, 1)
    api.start("warning")
    assert [e["id"] for e in listing(api, "/flows/hello/executions", filter="createdBy:user")] == theirs
    by_admin = listing(api, "/flows/hello/executions", filter="createdBy:admin", sort="createdAt,asc")
    assert [e["id"] for e in by_admin] == mine
    assert len(listing(api, filter="createdBy:admin")) == 3
    assert listing(api, filter="createdBy:nobody") == []


def test_filters_combine_and_the_flow_route_takes_the_display_name(api: Api, user_api: Api) -> None:
    start_many(api, 2)
    theirs = start_many(user_api, 1)
    api.start("warning")
    both = listing(api, filter=["createdBy:user", "flow:hello"])
    assert [e["id"] for e in both] == theirs
    assert len(listing(api, "/flows/Hello/executions")) == 3


def test_a_plain_user_lists_only_its_own_executions(api: Api, user_api: Api) -> None:
    start_many(api, 2)
    theirs = start_many(user_api, 2)
    assert sorted(e["id"] for e in listing(user_api)) == sorted(theirs)


def test_several_sort_keys_first_is_primary(api: Api) -> None:
    hello = start_many(api, 2)
    warning = start_many(api, 2, "warning")
    got = [e["id"] for e in listing(api, sort=["flow,desc", "createdAt,asc"])]
    assert got == warning + hello


@pytest.mark.parametrize(
    "params",
    [
        {"sort": "colour,asc"},
        {"sort": "createdAt,up"},
        {"filter": "colour:red"},
        {"filter": "createdBy"},
        {"size": "0"},
        {"size": "2001"},
        {"page": "-1"},
        {"page": "first"},
    ],
    ids=[
        "sort-field",
        "sort-direction",
        "filter-field",
        "filter-no-value",
        "size-0",
        "size-big",
        "page-neg",
        "page-text",
    ],
)
def test_bad_listing_parameters_are_400(api: Api, params: dict[str, str]) -> None:
    r = api.get("/flows/executions", params=params)
    assert r.status_code == 400
    assert r.json()["message"]


def test_unknown_flow_listing_is_404(api: Api) -> None:
    assert api.get("/flows/nope/executions").status_code == 404


def test_listing_is_one_request_in_the_log(emu: EmulatorServer, api: Api) -> None:
    start_many(api, 3)
    listing(api, size=2, sort="createdAt,desc", filter="createdBy:admin")
    (entry,) = emu.requests_to("GET", "/flows/executions$")
    assert entry["query"] == {"size": "2", "sort": "createdAt,desc", "filter": "createdBy:admin"}

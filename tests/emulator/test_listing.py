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


# --------------------------------------------------------------------------- every list is paged


def add_flows(emu: EmulatorServer, count: int) -> list[str]:
    return [
        emu.add_flow({"id": f"extra-{n:02d}", "steps": [{"message": "m", "percentage": 100}]})
        for n in range(count)
    ]


def test_a_client_reading_only_the_first_page_of_flows_misses_some(emu: EmulatorServer, api: Api) -> None:
    added = add_flows(emu, 33)  # 13 built-in + 33 = 46 flows, as the vendor server of the issue
    first = listing(api, "/flows")
    assert len(first) == 20
    pages = [listing(api, "/flows", page=n) for n in range(3)]
    assert [len(p) for p in pages] == [20, 20, 6]
    ids = [f["id"] for p in pages for f in p]
    assert len(set(ids)) == 46
    assert set(added) <= set(ids)


def test_flows_sort_and_filter_like_every_list(emu: EmulatorServer, api: Api) -> None:
    add_flows(emu, 3)
    assert [f["id"] for f in listing(api, "/flows", filter="id:extra-", sort="id,desc")] == [
        "extra-02",
        "extra-01",
        "extra-00",
    ]
    assert [f["id"] for f in listing(api, "/flows", size=2, page=1, filter="id:extra")] == ["extra-02"]
    assert api.get("/flows", params={"sort": "colour"}).status_code == 400


def test_filter_is_a_contains_match(api: Api) -> None:
    api.start("hello")
    api.start("warning")
    assert [e["flow"]["id"] for e in listing(api, filter="flow:ell")] == ["hello"]


def test_users_are_paged(api: Api) -> None:
    assert [u["id"] for u in listing(api, "/users", size=1, page=1, sort="id,asc")] == ["revoked"]
    assert len(listing(api, "/users")) == 3


def test_a_page_cap_holds_fewer_items_than_size_asks(emu: EmulatorServer, api: Api) -> None:
    start_many(api, 5)
    emu.set_api(page_cap=2)
    assert len(listing(api, size=100)) == 2
    assert len(listing(api, size=100, page=2)) == 1
    assert len(listing(api, "/flows", size=100)) == 2
    emu.reset()
    assert len(listing(api, "/flows", size=100)) == 13

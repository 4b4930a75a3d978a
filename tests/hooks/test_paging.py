"""The one paging helper (hooks.api.Paging) on its own: when it stops, what it refuses."""

from __future__ import annotations

import pytest

from airflow_provider_smartflows.exceptions import SmartFlowsError
from airflow_provider_smartflows.hooks.api import Paging, flows_page_request, read_pages


def serve(pages):
    """A ``call`` that answers the given pages in turn, and the (page, size) it was asked."""
    asked = []

    def call(request):
        asked.append((request.params["page"], request.params["size"]))
        return pages[len(asked) - 1]

    return call, asked


def items(*ids):
    return [{"id": i} for i in ids]


def test_a_short_page_is_the_last():
    call, asked = serve([items(1, 2, 3), items(4)])
    assert read_pages(Paging("list_x", flows_page_request, 3), call) == items(1, 2, 3, 4)
    assert asked == [(0, 3), (1, 3)]


def test_an_empty_page_ends_a_listing_of_full_pages():
    call, asked = serve([items(1, 2), []])
    assert read_pages(Paging("list_x", flows_page_request, 2), call) == items(1, 2)
    assert len(asked) == 2


def test_a_page_of_exactly_the_vendor_default_is_followed():
    first, second = items(*range(20)), items(*range(20, 25))
    call, asked = serve([first, second])
    assert len(read_pages(Paging("list_x", flows_page_request, 100), call)) == 25
    assert asked == [(0, 100), (1, 100)]


def test_an_item_listed_twice_is_kept_once():
    call, _ = serve([items(1, 2), items(2, 3), items(4)])
    assert read_pages(Paging("list_x", flows_page_request, 2), call) == items(1, 2, 3, 4)


def test_a_server_that_ignores_page_is_refused():
    call, _ = serve([items(*range(20)), items(*range(20))])
    with pytest.raises(SmartFlowsError, match=r"list_x: pages 0 and 1 hold the same items.*'pageNumber'"):
        read_pages(Paging("list_x", flows_page_request, 100), call)


def test_max_pages_names_the_call_and_what_to_do():
    call, asked = serve([items(1), items(2), items(3)])
    with pytest.raises(SmartFlowsError, match=r"list_x: 2 pages of 1 items .* larger max_pages") as info:
        read_pages(Paging("list_x", flows_page_request, 1, max_pages=2), call)
    assert info.value.call == "list_x"
    assert len(asked) == 2

"""DocumentInfo's metadata fields, and the hooks' document listings (GET /documents,
POST /documents/filter), paged, over HTTP against the emulator."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import pytest

from airflow_provider_smartflows.exceptions import SmartFlowsInputError
from airflow_provider_smartflows.hooks.api import filter_group
from airflow_provider_smartflows.hooks.smartflows_async import SmartFlowsAsyncHook
from airflow_provider_smartflows.models import DocumentInfo

if TYPE_CHECKING:
    from airflow_provider_smartflows.hooks.smartflows import SmartFlowsHook

DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
MANY = {
    "id": "t-many",
    "input": "none",
    "steps": [{"message": "m", "percentage": 50, "seconds": 0.01}],
    "documents": [{"displayName": f"Invoice {n}"} for n in range(1, 21)]
    + [{"displayName": f"Letter {n}", "contentType": DOCX} for n in range(1, 6)],
}


def run_to_end(hook: SmartFlowsHook, flow_id: str) -> str:
    execution_id = hook.start_execution(flow_id).id
    deadline = time.monotonic() + 30
    while not hook.get_progress(execution_id, wait_seconds=5).status.is_terminal:
        assert time.monotonic() < deadline
    return execution_id


def test_document_info_reads_the_metadata(hook: SmartFlowsHook) -> None:
    execution_id = run_to_end(hook, "hello")
    (ref,) = hook.list_documents(execution_id)
    info = hook.get_document(ref.id)
    assert info.finished is True
    assert info.origin == "flow"
    assert info.language == "en"
    assert info.template_id == "template-hello"
    assert info.post_processing is None
    assert info.created_at is not None
    assert info.created_at.tzinfo is not None
    assert info.expiration is not None
    assert info.expiration > info.created_at
    assert abs((info.created_at - datetime.now(timezone.utc)).total_seconds()) < 60


def test_document_info_tolerates_missing_and_bad_fields() -> None:
    info = DocumentInfo.from_json(
        {"id": "d1", "expiration": "not a date", "finished": "yes?", "createdAt": 1767225600000, "extra": 1}
    )
    assert info.expiration is None
    assert info.finished is None
    assert info.created_at == datetime(2026, 1, 1, tzinfo=timezone.utc)
    assert (info.origin, info.template_id, info.language, info.post_processing) == (None, None, None, None)


def test_a_zone_less_expiration_is_utc() -> None:
    info = DocumentInfo.from_json({"id": "d1", "expiration": "2026-01-02T03:04:05"})
    assert info.expiration == datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)


def test_list_all_documents_reads_every_page(hook: SmartFlowsHook, smartflows_emulator: Any) -> None:
    smartflows_emulator.add_flow(MANY)
    run_to_end(hook, "t-many")
    documents = hook.list_all_documents(page_size=10)
    assert len(documents) == 25
    assert len({d.id for d in documents}) == 25
    pages = smartflows_emulator.requests_to("GET", r"/api/v1/documents$")
    assert [r["query"]["page"] for r in pages] == ["0", "1", "2"]


def test_list_all_documents_reads_past_a_page_of_the_server_default(
    hook: SmartFlowsHook, smartflows_emulator: Any
) -> None:
    """A server that ignores ``size`` answers 20: the next page is read to be sure."""
    smartflows_emulator.add_flow(MANY)
    run_to_end(hook, "t-many")
    smartflows_emulator.set_api(page_cap=20)
    assert len(hook.list_all_documents()) == 25


def test_list_all_documents_filter(hook: SmartFlowsHook, smartflows_emulator: Any) -> None:
    smartflows_emulator.add_flow(MANY)
    run_to_end(hook, "t-many")
    letters = hook.list_all_documents(filter="displayName:Letter")
    assert sorted(d.display_name or "" for d in letters) == [f"Letter {n}" for n in range(1, 6)]


def test_filter_documents_sends_a_filter_group(hook: SmartFlowsHook, smartflows_emulator: Any) -> None:
    smartflows_emulator.add_flow(MANY)
    run_to_end(hook, "t-many")
    found = hook.filter_documents(
        [("contentType", "in", [DOCX]), ("displayName", "contains", "3")], page_size=2
    )
    assert [d.display_name for d in found] == ["Letter 3"]
    (sent,) = smartflows_emulator.requests_to("POST", r"/api/v1/documents/filter$")
    assert sent["query"]["page"] == "0"


def test_filter_documents_any_of(hook: SmartFlowsHook, smartflows_emulator: Any) -> None:
    smartflows_emulator.add_flow(MANY)
    run_to_end(hook, "t-many")
    found = hook.filter_documents(
        [("displayName", "equals", ["Invoice 1"]), ("displayName", "equals", ["Letter 1"])], match="or"
    )
    assert sorted(d.display_name or "" for d in found) == ["Invoice 1", "Letter 1"]


def test_filter_documents_takes_a_whole_body(hook: SmartFlowsHook, smartflows_emulator: Any) -> None:
    smartflows_emulator.add_flow(MANY)
    run_to_end(hook, "t-many")
    body = {
        "group": {
            "type": "and",
            "nodes": [
                {"id": "1", "condition": {"key": "contentType", "operator": "in", "values": [DOCX]}},
                {
                    "id": "2",
                    "group": {
                        "type": "or",
                        "nodes": [
                            {
                                "id": "3",
                                "condition": {
                                    "key": "displayName",
                                    "operator": "equals",
                                    "values": ["Letter 2"],
                                },
                            },
                            {
                                "id": "4",
                                "condition": {
                                    "key": "displayName",
                                    "operator": "equals",
                                    "values": ["Letter 4"],
                                },
                            },
                        ],
                    },
                },
            ],
        }
    }
    assert sorted(d.display_name or "" for d in hook.filter_documents(body)) == ["Letter 2", "Letter 4"]


def test_filter_group_shape() -> None:
    body = filter_group(
        [("status", "in", ["Success", "Error"]), ("createdAt", "lessThanOrEqualTo", "2019-01-01")]
    )
    nodes = body["group"]["nodes"]
    assert body["group"]["type"] == "and"
    assert [n["condition"] for n in nodes] == [
        {"key": "status", "operator": "in", "values": ["Success", "Error"]},
        {"key": "createdAt", "operator": "lessThanOrEqualTo", "values": ["2019-01-01"]},
    ]
    assert len({n["id"] for n in nodes}) == 2
    json.dumps(body)


@pytest.mark.parametrize(
    ("conditions", "match", "message"),
    [
        ([], "and", "at least one condition"),
        ([("a", "in")], "and", "is \\(key, operator, values\\)"),
        ([("a", "in", ["x"])], "xor", 'match must be "and" or "or"'),
        ({"nodes": []}, "and", "A filter body must be"),
    ],
    ids=["empty", "pair", "bad-match", "body-without-group"],
)
def test_bad_filters_are_refused_before_any_request(
    hook: SmartFlowsHook, smartflows_emulator: Any, conditions: Any, match: str, message: str
) -> None:
    with pytest.raises(SmartFlowsInputError, match=message):
        hook.filter_documents(conditions, match=match)
    assert not smartflows_emulator.requests_to("POST", r"/documents/filter$")


def test_async_hook_lists_and_filters(
    hook: SmartFlowsHook, smartflows_emulator: Any, smartflows_conn: str
) -> None:
    smartflows_emulator.add_flow(MANY)
    run_to_end(hook, "t-many")

    async def both() -> tuple[list[DocumentInfo], list[DocumentInfo]]:
        async with SmartFlowsAsyncHook(smartflows_conn) as async_hook:
            listed = await async_hook.list_all_documents(page_size=7)
            filtered = await async_hook.filter_documents([("contentType", "in", [DOCX])])
            return listed, filtered

    listed, filtered = asyncio.run(both())
    assert len(listed) == 25
    assert len(filtered) == 5

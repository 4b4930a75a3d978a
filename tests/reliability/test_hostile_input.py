"""Hostile data from the server and from the user.

Server: document names that try to leave the destination, absurd sizes and nesting of JSON.
User: invalid ids, inputs and timeouts are refused with SmartFlowsInputError before any request.

Covered elsewhere: single hostile names through the hook (tests/hooks/test_download.py::
test_hostile_display_names_stay_inside_the_folder), a Content-Length larger than the body
(test_fault_matrix.py content x truncate, tests/hooks/test_download.py::test_truncated_body_leaves_no_file)
and a 1 GiB download in bounded memory (tests/hooks/test_download.py::test_one_gib_download_keeps_the_heap_small).
"""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import json
import sys
import tracemalloc
from typing import TYPE_CHECKING, Any

import pytest

from airflow_provider_smartflows.exceptions import SmartFlowsApiError, SmartFlowsInputError
from airflow_provider_smartflows.hooks.smartflows import SmartFlowsHook
from airflow_provider_smartflows.hooks.smartflows_async import SmartFlowsAsyncHook
from airflow_provider_smartflows.operators.smartflows import (
    SmartFlowsDownloadDocumentsOperator,
    SmartFlowsRunFlowOperator,
)
from airflow_provider_smartflows.triggers.smartflows import SmartFlowsExecutionTrigger
from tests.support.dag_runs import make_dag
from tests.support.waits import progress_until

from .helpers import files_under

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = [pytest.mark.usefixtures("smartflows_conn"), pytest.mark.timeout(120)]


MIB = 1024 * 1024
HOSTILE_NAMES = [
    "../../etc/passwd",
    "a/b",
    "C:\\x",
    "..\\..\\windows\\system32",
    "nul\x00byte",
    "new\nline\r\nname",
    "x" * 10240,
    " ",
    ".",
    "..",
    "CON",
    "Same",
    "Same",
    "same",
    "\u202egnp.exe",
]


@pytest.fixture
def hook(smartflows_conn: str) -> Any:
    sync_hook = SmartFlowsHook(smartflows_conn, timeout=10, retry_limit=1, retry_delay=0.01)
    try:
        yield sync_hook
    finally:
        sync_hook.close()


def finished(hook: SmartFlowsHook, flow_id: str) -> Any:
    return progress_until(hook, hook.start_execution(flow_id).id)


# --------------------------------------------------------------------------- server data


def test_hostile_document_names_stay_inside_the_destination(
    smartflows_emulator: Any, hook: SmartFlowsHook, tmp_path: Path
) -> None:
    documents = [{"displayName": name} for name in HOSTILE_NAMES]
    documents.append({"displayName": "weird type", "contentType": "application/x-never-heard-of"})
    smartflows_emulator.add_flow({"id": "hostile-names", "steps": [], "documents": documents})
    progress = finished(hook, "hostile-names")
    destination = tmp_path / "inside" / "docs"
    operator = SmartFlowsDownloadDocumentsOperator(
        task_id="download", execution_id=progress.id, destination=f"{destination}/"
    )
    written = operator.execute(context={})  # type: ignore[arg-type]

    assert len(written) == len(documents)
    files = files_under(tmp_path)
    # Everything is directly in the destination folder: nothing above it, no sub-folders.
    assert all(name.startswith("inside/docs/") and name.count("/") == 2 for name in files), files
    assert len(files) == len(documents)
    assert len({name.casefold() for name in files}) == len(files)
    for name in files:
        leaf = name.rsplit("/", 1)[1]
        assert leaf not in ("", ".", "..")
        assert not leaf.startswith(".")
        assert len(leaf.encode()) <= 255
        assert not any(ord(ch) < 32 or ch in "\\:" for ch in leaf)
    by_sha = {hashlib.sha256((tmp_path / name).read_bytes()).hexdigest() for name in files}
    expected = {smartflows_emulator.document_sha256(doc.id) for doc in progress.documents}
    assert by_sha == expected


@pytest.mark.parametrize("display_name", ["", None, "\x00"], ids=["empty", "null", "nul"])
def test_empty_document_name_falls_back_to_the_document_id(
    smartflows_emulator: Any, hook: SmartFlowsHook, tmp_path: Path, display_name: Any
) -> None:
    # The emulator refuses empty names in flows, so the metadata answer is replaced instead.
    (document,) = finished(hook, "hello").documents
    metadata = {"id": document.id, "displayName": display_name, "contentType": "application/pdf"}
    smartflows_emulator.add_fault("invalid_json", path="/documents/[^/]+$", body=json.dumps(metadata))
    result = hook.download_document(document.id, f"{tmp_path}/")
    assert files_under(tmp_path) == [f"{document.id}.pdf"]
    assert result.sha256 == smartflows_emulator.document_sha256(document.id)


@pytest.mark.parametrize("depth", [None, 100_000], ids=["past-the-recursion-limit", "100k-deep"])
def test_deeply_nested_model_is_a_clean_error(
    smartflows_emulator: Any, hook: SmartFlowsHook, depth: int | None
) -> None:
    # Read at run time: Airflow's BaseOperator.__deepcopy__ raises the process's recursion limit
    # (to 5000), so after any DAG run a fixed 1000 levels would parse fine and test nothing.
    depth = depth or sys.getrecursionlimit() + 1000
    body = '{"id": "e1", "status": "Success", "model": ' + "[" * depth + "]" * depth + "}"
    smartflows_emulator.add_fault("invalid_json", path="/progress$", body=body, times=None)
    with pytest.raises(SmartFlowsApiError, match=r"answered 200 with a body that is not the expected JSON"):
        hook.get_progress("e1")

    async def trigger_event() -> dict[str, Any]:
        trigger = SmartFlowsExecutionTrigger("e1", "smartflows_default", poll_interval=1)
        events = [event.payload async for event in trigger.run()]
        assert len(events) == 1
        return events[0]

    event = asyncio.run(trigger_event())
    assert event["status"] == "error"
    assert "not the expected JSON" in event["message"]


def test_documents_deeper_than_the_walk_limit_are_ignored_not_crashed_on(
    smartflows_emulator: Any, hook: SmartFlowsHook
) -> None:
    def nest(depth: int, doc_id: str) -> Any:
        node: Any = {"x": {"id": doc_id, "type": "document"}}
        for _ in range(depth):
            node = {"n": node}
        return node

    model = {"shallow": nest(50, "d-shallow"), "deep": nest(600, "d-deep")}
    body = json.dumps({"id": "e1", "status": "Success", "model": model})
    smartflows_emulator.add_fault("invalid_json", path="/progress$", body=body)
    progress = hook.get_progress("e1")
    assert [doc.id for doc in progress.documents] == ["d-shallow"]


def test_huge_model_is_parsed_in_memory_proportional_to_it(
    smartflows_emulator: Any, hook: SmartFlowsHook
) -> None:
    refs = {f"B{i:032x}": {"document": {"id": f"doc-{i}", "type": "document"}} for i in range(2000)}
    blob = "x" * (20 * MIB)
    body = json.dumps({"id": "e1", "status": "Success", "model": {**refs, "blob": blob}})
    del blob
    smartflows_emulator.add_fault("invalid_json", path="/progress$", body=body)
    size = len(body)
    tracemalloc.start()
    try:
        progress = hook.get_progress("e1")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(progress.documents) == 2000
    # The emulator (same process) encodes the body once, the client holds bytes, text and the
    # parsed string: a few times the answer, never more. The answer itself is not capped (RELIABILITY.md).
    assert peak < 7 * size, f"peak {peak / MIB:.0f} MiB for a {size / MIB:.0f} MiB answer"


# --------------------------------------------------------------------------- user input

BAD_IDS = ["", ".", "a/b", "..", "../x", "a/../b", "x" * 201, "a b", "a\nb", "a\x00b", "\u202eab", "a\u00a0b"]


@pytest.mark.parametrize("bad", BAD_IDS, ids=lambda bad: repr(bad)[:12])
@pytest.mark.parametrize(
    "call",
    [
        "start_execution",
        "dataset_id",
        "get_progress",
        "get_execution",
        "cancel_execution",
        "answer_user_input",
        "get_document",
        "download_document",
        "list_documents",
    ],
)
def test_invalid_ids_are_refused_before_any_request(
    smartflows_emulator: Any, hook: SmartFlowsHook, tmp_path: Path, call: str, bad: str
) -> None:
    calls = {
        "start_execution": lambda: hook.start_execution(bad),
        "dataset_id": lambda: hook.start_execution("hello", dataset_id=bad),
        "get_progress": lambda: hook.get_progress(bad),
        "get_execution": lambda: hook.get_execution(bad),
        "cancel_execution": lambda: hook.cancel_execution(bad),
        "answer_user_input": lambda: hook.answer_user_input(bad, {"approved": True}),
        "get_document": lambda: hook.get_document(bad),
        "download_document": lambda: hook.download_document(bad, f"{tmp_path}/"),
        "list_documents": lambda: hook.list_documents(bad),
    }
    with pytest.raises(SmartFlowsInputError, match=r"id"):
        calls[call]()
    assert smartflows_emulator.requests == []
    assert files_under(tmp_path) == []


BAD_INPUTS = [
    pytest.param([1, 2], r"must be None, a dict .* or XML .*not list", id="json-array"),
    pytest.param(42, r"not int", id="number"),
    pytest.param({"entity": "account"}, r"needs 'id'", id="dict-without-ids"),
    pytest.param({"id": "a", "entity": "account"}, r"needs 'id', a non-empty list", id="ids-not-a-list"),
    pytest.param({"id": ["a"], "entity": ""}, r"needs 'entity'", id="empty-entity"),
    pytest.param({"id": ["a"], "entity": "x", "n": float("nan")}, r"not JSON-serialisable", id="nan"),
    pytest.param("<a><b></a>", r"not well-formed", id="mismatched-xml"),
    pytest.param("<a>", r"not well-formed", id="unclosed-xml"),
    pytest.param("not xml at all", r"not well-formed", id="text"),
    pytest.param(b"\xff\xfe<a/>", r"not well-formed", id="binary"),
    pytest.param('<?xml version="1.0" encoding="latin-1"?><a/>', r"declares encoding", id="str-latin1"),
]


@pytest.mark.parametrize(("data", "match"), BAD_INPUTS)
def test_invalid_input_data_is_refused_before_any_request(
    smartflows_emulator: Any, hook: SmartFlowsHook, data: Any, match: str
) -> None:
    with pytest.raises(SmartFlowsInputError, match=match):
        hook.start_execution("hello", data)
    assert smartflows_emulator.requests == []


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda: SmartFlowsHook(timeout=-1), id="hook-timeout"),
        pytest.param(lambda: SmartFlowsHook(timeout=0), id="hook-timeout-zero"),
        pytest.param(lambda: SmartFlowsHook(retry_limit=-1), id="retry-limit"),
        pytest.param(lambda: SmartFlowsHook(retry_delay=-0.5), id="retry-delay"),
        pytest.param(lambda: SmartFlowsHook(retry_limit=0).get_progress("e1", wait_seconds=-1), id="wait"),
        pytest.param(
            lambda: SmartFlowsHook(retry_limit=0).get_progress("e1", wait_seconds=10**9), id="wait-huge"
        ),
        pytest.param(lambda: SmartFlowsAsyncHook(retry_limit=-1), id="async-retry-limit"),
        pytest.param(lambda: SmartFlowsRunFlowOperator(task_id="t", timeout=-5), id="operator-timeout"),
        pytest.param(lambda: SmartFlowsRunFlowOperator(task_id="t", poll_interval=-1), id="operator-poll"),
    ],
)
def test_negative_timeouts_are_refused_before_any_request(smartflows_emulator: Any, make: Any) -> None:
    with pytest.raises(SmartFlowsInputError):
        make()
    assert smartflows_emulator.requests == []


def test_negative_timeout_in_the_connection_is_refused(
    smartflows_emulator: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_SF_NEG", smartflows_emulator.connection_json(timeout=-3))
    with pytest.raises(
        SmartFlowsInputError, match=r"Connection 'sf_neg': extra 'timeout' must be a positive"
    ):
        SmartFlowsHook("sf_neg").get_progress("e1")
    assert smartflows_emulator.requests == []


def test_async_hook_refuses_bad_ids_before_any_request(smartflows_emulator: Any) -> None:
    async def calls() -> None:
        async with SmartFlowsAsyncHook(retry_limit=0) as hook:
            for bad in BAD_IDS:
                for call in (hook.get_progress, hook.get_execution, hook.cancel_execution):
                    with pytest.raises(SmartFlowsInputError):
                        await call(bad)

    asyncio.run(calls())
    assert smartflows_emulator.requests == []


@pytest.mark.slow  # a dag.test() run
def test_operators_refuse_hostile_input_before_any_request(
    run_dag: Any, smartflows_emulator: Any, tmp_path: Path
) -> None:
    def build() -> None:
        SmartFlowsRunFlowOperator(task_id="bad_flow", flow_id="../../flows/x")
        SmartFlowsRunFlowOperator(task_id="bad_data", flow_id="hello", data=[1, 2])
        SmartFlowsRunFlowOperator(task_id="bad_xml", flow_id="hello", data="<a><b></a>")
        SmartFlowsDownloadDocumentsOperator(
            task_id="bad_document", document_ids=["../x"], destination=f"{tmp_path}/"
        )
        SmartFlowsDownloadDocumentsOperator(
            task_id="bad_execution", execution_id="a/../b", destination=f"{tmp_path}/"
        )

    dag = make_dag("hostile_user_input", build, default_args={"retry_delay": datetime.timedelta(0)})
    result = run_dag(dag)
    assert set(result.states.values()) == {"failed"}
    for task_id in result.states:
        assert isinstance(result.error(task_id), SmartFlowsInputError), task_id
    assert smartflows_emulator.requests == []
    assert files_under(tmp_path) == []

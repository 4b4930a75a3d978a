"""SmartFlowsHook against the emulator: every call on each documented shape, and its errors."""

from __future__ import annotations

import time

import pytest

from airflow_provider_smartflows.exceptions import (
    SmartFlowsApiError,
    SmartFlowsAuthError,
    SmartFlowsError,
    SmartFlowsInputError,
    SmartFlowsNotFoundError,
)
from airflow_provider_smartflows.hooks.smartflows import SmartFlowsHook
from airflow_provider_smartflows.models import DocumentRef, ExecutionStatus
from tests.support.waits import progress_until

DYNAMICS = {"id": ["rec-1", "rec-2"], "entity": "account", "userId": "u-1", "organizationUniqueName": "org"}
XML = '<?xml version="1.0" encoding="utf-8"?><letter><to>Ann</to></letter>'


def wait_for(hook, execution_id, predicate, deadline=30.0):
    """Long-poll until ``predicate(progress)``; the server answers as soon as something changes."""
    return progress_until(hook, execution_id, predicate, timeout=deadline)


def finished(hook, execution_id):
    return wait_for(hook, execution_id, lambda p: p.status.is_terminal or p.raw_status == "Archived")


# --------------------------------------------------------------------------- start_execution


def test_start_without_body(smartflows_emulator, hook):
    progress = hook.start_execution("hello")
    assert progress.id
    assert progress.status in (ExecutionStatus.QUEUED, ExecutionStatus.RUNNING)
    (request,) = smartflows_emulator.requests_to("POST", r"/flows/executions$")
    assert request["query"] == {"flowId": "hello"}
    assert request["body_bytes"] == 0
    assert "Content-Type" not in request["headers"]


def test_start_with_dynamics_json(smartflows_emulator, hook):
    progress = hook.start_execution("invoice", DYNAMICS)
    (request,) = smartflows_emulator.requests_to("POST", r"/flows/executions$")
    assert request["headers"]["Content-Type"] == "application/json; charset=utf-8"
    assert request["status"] == 200
    execution = hook.get_execution(finished(hook, progress.id).id)
    assert execution.raw["state"]["inputData"]["id"] == ["rec-1", "rec-2"]
    assert len(execution.documents) == 2  # one invoice per record


@pytest.mark.parametrize("payload", [XML, XML.encode()], ids=["str", "bytes"])
def test_start_with_xml(smartflows_emulator, hook, payload):
    progress = hook.start_execution("xml-letter", payload, dataset_id="letters")
    (request,) = smartflows_emulator.requests_to("POST", r"/flows/executions$")
    assert request["headers"]["Content-Type"] == 'application/xml; charset="utf-8"'
    assert request["query"] == {"flowId": "xml-letter", "datasetId": "letters"}
    assert finished(hook, progress.id).status is ExecutionStatus.SUCCESS


def test_start_passes_priority(smartflows_emulator, hook):
    hook.start_execution("hello", priority=5)
    (request,) = smartflows_emulator.requests_to("POST", r"/flows/executions$")
    assert request["query"]["priority"] == "5"


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ("<letter><to>Ann</letter>", "not well-formed"),
        (b"\x00not xml", "not well-formed"),
        ({"entity": "account"}, "needs 'id'"),
        ({"id": ["r1"]}, "needs 'entity'"),
        ({"id": ["r1"], "entity": "a", "when": object()}, "not JSON-serialisable"),
        ('<?xml version="1.0" encoding="latin-1"?><a/>', "declares encoding 'latin-1'"),
        (42, "must be None, a dict"),
    ],
    ids=[
        "xml-unclosed",
        "xml-binary",
        "json-no-id",
        "json-no-entity",
        "json-unserialisable",
        "xml-encoding",
        "int",
    ],
)
def test_start_rejects_bad_input_before_sending(smartflows_emulator, hook, data, match):
    with pytest.raises(SmartFlowsInputError, match=match):
        hook.start_execution("hello", data)
    assert smartflows_emulator.requests == []


def test_start_of_unknown_flow_is_not_found(smartflows_emulator, hook):
    with pytest.raises(SmartFlowsNotFoundError, match="Flow 'nope' was not found") as info:
        hook.start_execution("nope")
    assert info.value.status_code == 404
    assert smartflows_emulator.executions_started() == 0


def test_start_with_wrong_input_kind_is_a_400_api_error(smartflows_emulator, hook):
    with pytest.raises(SmartFlowsApiError, match="answered 400") as info:
        hook.start_execution("invoice", XML)
    assert info.value.status_code == 400
    assert "expects" in info.value.body_excerpt
    assert len(smartflows_emulator.requests) == 1


# --------------------------------------------------------------------------- progress: all ten statuses


def _start_and_reach(hook, emulator, flow, status, data=None):
    progress = hook.start_execution(flow, data)
    return wait_for(hook, progress.id, lambda p: p.raw_status == status)


STATUS_CASES = {
    "Queued": lambda h, e, f: _start_and_reach(h, e, f["queued"], "Queued"),
    "Running": lambda h, e, f: _start_and_reach(h, e, f["running"], "Running"),
    "Waiting": lambda h, e, f: _start_and_reach(h, e, "signature", "Waiting"),
    "UserInput": lambda h, e, f: _start_and_reach(h, e, "approval", "UserInput"),
    "SelectFlow": lambda h, e, f: _start_and_reach(h, e, None, "SelectFlow"),
    "Success": lambda h, e, f: _start_and_reach(h, e, "hello", "Success"),
    "Warning": lambda h, e, f: _start_and_reach(h, e, "warning", "Warning"),
    "Error": lambda h, e, f: _start_and_reach(h, e, "error", "Error"),
    "Canceled": lambda h, e, f: h.cancel_execution(h.start_execution(f["running"]).id),
    "Interrupted": lambda h, e, f: _start_and_reach(h, e, "interrupted", "Interrupted"),
}


@pytest.mark.parametrize("status", list(STATUS_CASES))
def test_progress_reports_each_status(smartflows_emulator, hook, long_flows, status):
    progress = STATUS_CASES[status](hook, smartflows_emulator, long_flows)
    assert progress.status is ExecutionStatus.parse(status)
    assert progress.status.value == status
    assert hook.get_progress(progress.id).status.value == status


def test_progress_of_an_unknown_status_is_unknown(smartflows_emulator, hook):
    progress = finished(hook, hook.start_execution("archived").id)
    assert progress.status is ExecutionStatus.UNKNOWN
    assert progress.raw_status == "Archived"


def test_progress_of_user_input_lists_form_keys(smartflows_emulator, hook):
    progress = _start_and_reach(hook, smartflows_emulator, "approval", "UserInput")
    assert {"approved", "comment"} <= set(progress.form_keys)


def test_progress_long_poll_sends_timeout_and_extends_the_request_timeout(smartflows_emulator, set_conn):
    """The server holds a long-poll for wait_seconds: the request timeout must grow by that much."""
    # The hold (3 s) outlasts the plain timeout (2 s), so an unextended request times out; the
    # extended one (5 s) leaves 2 s for a loaded machine to answer after the hold.
    hook = SmartFlowsHook(set_conn(), timeout=2, retry_limit=0)
    progress = _start_and_reach(hook, smartflows_emulator, "signature", "Waiting")
    started = time.monotonic()
    assert hook.get_progress(progress.id, wait_seconds=3).status is ExecutionStatus.WAITING
    assert time.monotonic() - started >= 2.9  # the emulator held it, and we did not time out
    assert smartflows_emulator.requests_to("GET", "/progress$")[-1]["query"] == {"timeout": "3"}


@pytest.mark.parametrize(
    ("wait", "sent"),
    [(0, "0"), (0.2, "1"), (1.5, "2"), (7, "7")],
    ids=["zero", "sub-second", "fraction", "whole"],
)
def test_progress_long_poll_rounds_wait_up_to_whole_seconds(smartflows_emulator, hook, wait, sent):
    """The API takes whole seconds and answers at once for 0: a short wait must not become a spin."""
    progress = hook.start_execution("hello")
    hook.get_progress(progress.id, wait_seconds=wait)
    assert smartflows_emulator.requests_to("GET", "/progress$")[-1]["query"] == {"timeout": sent}


@pytest.mark.parametrize("wait", [-1, 3601, "30", True], ids=["negative", "too-long", "text", "bool"])
def test_progress_rejects_bad_wait_seconds(smartflows_emulator, hook, wait):
    with pytest.raises(SmartFlowsInputError, match="wait_seconds"):
        hook.get_progress("e1", wait_seconds=wait)
    assert smartflows_emulator.requests == []


def test_progress_of_unknown_execution_is_not_found(smartflows_emulator, hook):
    with pytest.raises(
        SmartFlowsNotFoundError, match=r"Execution 'missing' was not found.*connection 'smartflows_default'"
    ):
        hook.get_progress("missing")
    assert len(smartflows_emulator.requests) == 1


def test_progress_documents_nested_under_block_ids(smartflows_emulator, hook):
    progress = finished(hook, hook.start_execution("xml-letter", XML).id)
    assert [d.display_name for d in progress.documents] == ["Letter", "Letter"]


# --------------------------------------------------------------------------- execution, documents


def test_get_execution_of_success(smartflows_emulator, hook):
    execution_id = finished(hook, hook.start_execution("hello").id).id
    execution = hook.get_execution(execution_id)
    assert (execution.id, execution.status, execution.flow_id, execution.flow_name) == (
        execution_id,
        ExecutionStatus.SUCCESS,
        "hello",
        "Hello",
    )
    assert execution.created_at
    assert [d.display_name for d in execution.documents] == ["Hello"]
    assert execution.errors == ()


def test_get_execution_of_error_has_flow_exceptions(smartflows_emulator, hook):
    execution = hook.get_execution(finished(hook, hook.start_execution("error").id).id)
    assert execution.status is ExecutionStatus.ERROR
    (error,) = execution.errors
    assert error.error
    assert error.message
    assert error.causes


def test_get_execution_of_warning_has_warnings(smartflows_emulator, hook):
    execution = hook.get_execution(finished(hook, hook.start_execution("warning").id).id)
    assert execution.status.is_success
    assert len(execution.warnings) == 1


def test_list_documents_finds_all_three_including_same_names(smartflows_emulator, hook):
    execution_id = finished(hook, hook.start_execution("multi-docs").id).id
    documents = hook.list_documents(execution_id)
    assert len(documents) == 3
    assert len({d.id for d in documents}) == 3
    assert all(isinstance(d, DocumentRef) for d in documents)


def test_get_document_metadata(smartflows_emulator, hook):
    execution_id = finished(hook, hook.start_execution("xml-letter", XML).id).id
    infos = [hook.get_document(d.id) for d in hook.list_documents(execution_id)]
    assert sorted(i.file_name for i in infos) == ["Letter.docx", "Letter.pdf"]
    assert {i.content_type for i in infos} == {
        "application/pdf",
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    }


def test_get_document_unknown_is_not_found(smartflows_emulator, hook):
    with pytest.raises(SmartFlowsNotFoundError, match="Document 'nope' was not found"):
        hook.get_document("nope")


def test_list_flows(smartflows_emulator, hook):
    flows = {flow["id"]: flow for flow in hook.list_flows()}
    assert {"hello", "invoice", "xml-letter", "approval"} <= set(flows)
    assert flows["hello"]["displayName"] == "Hello"


def add_flows(emulator, count):
    """``count`` more flows: 13 built-in + 33 = 46, the count that showed the defect on a vendor server."""
    return [
        emulator.add_flow({"id": f"extra-{n:02d}", "steps": [{"message": "m", "percentage": 100}]})
        for n in range(count)
    ]


def test_list_flows_reads_past_the_servers_default_page(smartflows_emulator, hook):
    add_flows(smartflows_emulator, 33)
    assert len({flow["id"] for flow in hook.list_flows()}) == 46
    (request,) = smartflows_emulator.requests_to("GET", "/flows$")
    assert request["query"] == {"page": "0", "size": "100"}


def test_list_executions_reads_every_page_newest_first(smartflows_emulator, hook):
    started = [hook.start_execution("hello").id for _ in range(23)]
    hook.start_execution("warning")
    assert [e["id"] for e in hook.list_executions("hello", page_size=10)] == started[::-1]
    assert len(hook.list_executions()) == 24
    assert [e["id"] for e in hook.list_executions(filter="flow:warning")] != []
    pages = [r["query"] for r in smartflows_emulator.requests_to("GET", "/flows/hello/executions$")]
    assert [p["page"] for p in pages] == ["0", "1", "2"]


def test_list_flows_follows_pages_until_a_short_one(smartflows_emulator, hook):
    add_flows(smartflows_emulator, 33)
    flows = hook.list_flows(page_size=15)
    assert len({flow["id"] for flow in flows}) == len(flows) == 46
    pages = [r["query"] for r in smartflows_emulator.requests_to("GET", "/flows$")]
    assert pages == [{"page": str(n), "size": "15"} for n in range(4)]


def test_list_flows_on_a_server_that_answers_20_whatever_size_asks(smartflows_emulator, hook):
    add_flows(smartflows_emulator, 33)
    smartflows_emulator.set_api(page_cap=20)
    assert len(hook.list_flows()) == 46
    assert len(smartflows_emulator.requests_to("GET", "/flows$")) == 3


def test_list_flows_stops_at_max_pages_with_an_error_naming_the_call(smartflows_emulator, hook):
    add_flows(smartflows_emulator, 33)
    with pytest.raises(
        SmartFlowsError,
        match=r"list_flows \(GET /api/v1/flows\): 2 pages of 10 items did not reach the end of the "
        r"listing\. Pass a larger max_pages",
    ):
        hook.list_flows(page_size=10, max_pages=2)
    assert len(smartflows_emulator.requests_to("GET", "/flows$")) == 2


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"page_size": 0}, "page_size must be an integer >= 1"), ({"max_pages": True}, "max_pages must be")],
    ids=["size-0", "pages-bool"],
)
def test_list_flows_checks_its_arguments(smartflows_emulator, hook, kwargs, match):
    with pytest.raises(SmartFlowsInputError, match=match):
        hook.list_flows(**kwargs)
    assert smartflows_emulator.requests == []


# --------------------------------------------------------------------------- cancel, answer


def test_cancel_uses_the_progress_path_by_default(smartflows_emulator, hook, long_flows):
    execution_id = hook.start_execution(long_flows["running"]).id
    assert hook.cancel_execution(execution_id).status is ExecutionStatus.CANCELED
    (request,) = smartflows_emulator.requests_to("DELETE", "")
    assert request["path"] == f"/api/v1/flows/executions/{execution_id}/progress"


def test_cancel_path_execution_variant(smartflows_emulator, set_conn, long_flows):
    hook = SmartFlowsHook(set_conn(cancel_path="execution"))
    execution_id = hook.start_execution(long_flows["running"]).id
    assert hook.cancel_execution(execution_id).status is ExecutionStatus.CANCELED
    (request,) = smartflows_emulator.requests_to("DELETE", "")
    assert request["path"] == f"/api/v1/flows/executions/{execution_id}"


def test_cancel_404_suggests_the_other_cancel_path(smartflows_emulator, hook):
    smartflows_emulator.add_fault("status", method="DELETE", status=404)
    with pytest.raises(SmartFlowsNotFoundError, match='set the extra "cancel_path": "execution"'):
        hook.cancel_execution("e1")


def test_answer_user_input_resumes_the_execution(smartflows_emulator, hook):
    progress = _start_and_reach(hook, smartflows_emulator, "approval", "UserInput")
    answered = hook.answer_user_input(progress.id, {"approved": True, "comment": "ok"})
    assert answered.status is not ExecutionStatus.USER_INPUT
    (request,) = smartflows_emulator.requests_to("POST", "/progress$")
    assert request["headers"]["Content-Type"] == "application/json; charset=utf-8"
    assert finished(hook, progress.id).status is ExecutionStatus.SUCCESS


@pytest.mark.parametrize(
    "answers", [["approved"], {1: True}, {"x": object()}], ids=["list", "int-key", "unserialisable"]
)
def test_answer_user_input_rejects_bad_answers(smartflows_emulator, hook, answers):
    with pytest.raises(SmartFlowsInputError, match="Answers for execution 'e1'"):
        hook.answer_user_input("e1", answers)
    assert smartflows_emulator.requests == []


# --------------------------------------------------------------------------- error classes


@pytest.mark.parametrize(
    ("fault", "error_class", "match"),
    [
        (
            {"kind": "status", "status": 401},
            SmartFlowsAuthError,
            "refused the API key of connection 'smartflows_default'",
        ),
        ({"kind": "status", "status": 403}, SmartFlowsAuthError, "lacks the rights for GET /flows"),
        ({"kind": "status", "status": 404}, SmartFlowsNotFoundError, "was not found"),
        ({"kind": "status", "status": 400}, SmartFlowsApiError, "answered 400"),
        ({"kind": "status", "status": 500, "times": None}, SmartFlowsApiError, "answered 500"),
        ({"kind": "html", "status": 502, "times": None}, SmartFlowsApiError, "answered 502"),
        ({"kind": "invalid_json"}, SmartFlowsApiError, "not the expected JSON"),
    ],
    ids=["401", "403", "404", "400", "500", "html-502", "invalid-json"],
)
def test_error_class_from_server_answer(smartflows_emulator, hook, fault, error_class, match):
    smartflows_emulator.add_fault(path="/flows$", **fault)
    with pytest.raises(error_class, match=match) as info:
        hook.list_flows()
    assert type(info.value) is error_class
    assert info.value.method == "GET"
    assert info.value.path == "/flows"


def test_html_error_page_is_reduced_to_a_text_excerpt(smartflows_emulator, hook):
    smartflows_emulator.add_fault("html", path="/flows$", status=502, times=None)
    with pytest.raises(SmartFlowsApiError) as info:
        hook.list_flows()
    assert info.value.status_code == 502
    assert "<" not in info.value.body_excerpt
    assert len(info.value.body_excerpt) <= 303


def test_revoked_key_is_an_auth_error(smartflows_emulator, set_conn):
    hook = SmartFlowsHook(set_conn(key=smartflows_emulator.revoked_key))
    with pytest.raises(SmartFlowsAuthError, match="key is wrong or was removed") as info:
        hook.get_progress("e1")
    assert info.value.status_code == 401
    assert info.value.conn_id == "sf_test"


def test_unknown_flow_names_the_closest_flows_the_key_can_see(smartflows_emulator, hook):
    """A 404 on a start: the flows closest to the id (by id and display name), no purge advice."""
    with pytest.raises(SmartFlowsNotFoundError) as raised:
        hook.start_execution("helo")
    error = raised.value
    assert error.status_code == 404
    assert error.method == "POST"
    message = str(error)
    assert "Flow 'helo' was not found" in message
    assert "The closest flows this API key can see: 'hello'" in message
    assert "purged" not in message
    assert smartflows_emulator.executions == []


def test_unknown_execution_keeps_the_purge_advice(hook):
    with pytest.raises(SmartFlowsNotFoundError, match="purged by the server's clean-up"):
        hook.get_execution("no-such-execution")

"""Pure tests of the wire model: statuses, parsers, the document finder, safe file names."""

from __future__ import annotations

import pickle

import pytest

from airflow_provider_smartflows.exceptions import (
    SmartFlowsApiError,
    SmartFlowsAuthError,
    SmartFlowsConnectionError,
    SmartFlowsDownloadError,
    SmartFlowsError,
    SmartFlowsExecutionError,
    SmartFlowsInputError,
    SmartFlowsNotFoundError,
    SmartFlowsStartUnknownError,
    SmartFlowsTimeoutError,
)
from airflow_provider_smartflows.models import (
    DocumentInfo,
    DocumentRef,
    Execution,
    ExecutionProgress,
    ExecutionStatus,
    FlowException,
    extension_for,
    find_document_refs,
    safe_file_name,
)

pytestmark = pytest.mark.airflow_agnostic  # pure rules, the same on every Airflow line

WIRE_STATUSES = [
    ("Queued", ExecutionStatus.QUEUED, False, False, False),
    ("Running", ExecutionStatus.RUNNING, False, False, False),
    ("Waiting", ExecutionStatus.WAITING, False, False, False),
    ("UserInput", ExecutionStatus.USER_INPUT, False, False, False),
    ("SelectFlow", ExecutionStatus.SELECT_FLOW, False, False, False),
    ("Success", ExecutionStatus.SUCCESS, True, True, False),
    ("Warning", ExecutionStatus.WARNING, True, True, False),
    ("Error", ExecutionStatus.ERROR, True, False, True),
    ("Canceled", ExecutionStatus.CANCELED, True, False, True),
    ("Interrupted", ExecutionStatus.INTERRUPTED, True, False, True),
]


@pytest.mark.parametrize(
    ("raw", "status", "terminal", "success", "failure"), WIRE_STATUSES, ids=[s[0] for s in WIRE_STATUSES]
)
def test_status_parses_each_wire_value(raw, status, terminal, success, failure):
    parsed = ExecutionStatus.parse(raw)
    assert parsed is status
    assert parsed.value == raw
    assert (parsed.is_terminal, parsed.is_success, parsed.is_failure) == (terminal, success, failure)


@pytest.mark.parametrize(
    "raw", ["Archived", "", None, 42, {"x": 1}], ids=["new", "empty", "none", "int", "dict"]
)
def test_status_unknown_value_is_unknown_and_not_terminal(raw):
    parsed = ExecutionStatus.parse(raw)
    assert parsed is ExecutionStatus.UNKNOWN
    assert not parsed.is_terminal
    assert not parsed.is_success
    assert not parsed.is_failure


@pytest.mark.parametrize(
    ("raw", "status"),
    [("SUCCESS", ExecutionStatus.SUCCESS), ("Cancelled", ExecutionStatus.CANCELED)],
    ids=["upper", "british-spelling"],
)
def test_status_parse_is_lenient_on_spelling(raw, status):
    assert ExecutionStatus.parse(raw) is status


def test_progress_keeps_raw_status_of_unknown_value():
    progress = ExecutionProgress.from_json({"id": "e1", "status": "Archived", "extra": 1})
    assert progress.status is ExecutionStatus.UNKNOWN
    assert progress.raw_status == "Archived"


def test_progress_parses_fields_form_keys_and_documents():
    progress = ExecutionProgress.from_json(
        {
            "id": "e1",
            "percentage": 60,
            "message": "Generating",
            "status": "UserInput",
            "schema": {"properties": {"approved": {"type": "boolean"}}},
            "form": [{"items": [{"key": "approved"}, {"key": "comment"}, "*"]}],
            "model": {"Bblock": {"document": {"id": "d1", "displayName": "Letter", "type": "document"}}},
            "unknownField": {"nested": True},
        }
    )
    assert (progress.id, progress.percentage, progress.message) == ("e1", 60.0, "Generating")
    assert progress.status is ExecutionStatus.USER_INPUT
    assert progress.form_keys == ("approved", "comment")
    assert progress.documents == (DocumentRef("d1", "Letter"),)


@pytest.mark.parametrize(
    "data",
    [None, [], "text", {"status": "Running"}, {"id": ""}],
    ids=["none", "list", "str", "no-id", "empty-id"],
)
def test_progress_rejects_non_object_or_missing_id(data):
    with pytest.raises(ValueError, match="execution progress"):
        ExecutionProgress.from_json(data)


def test_execution_parses_flow_errors_warnings_and_documents_but_not_input_data():
    execution = Execution.from_json(
        {
            "id": "e1",
            "status": "Warning",
            "createdAt": "2024-05-01T10:00:00Z",
            "flow": {"id": "f1", "displayName": "Invoice", "type": "flow"},
            "state": {
                "inputData": {"x": {"id": "not-a-doc", "type": "document"}},
                "output": {
                    "model": {"B1": {"document": {"id": "d1", "type": "document"}}},
                    "parts": [{"model": {"B2": {"pdf": {"id": "d2", "type": "document"}}}}],
                },
                "errors": [],
                "warnings": [{"error": "DeliveryWarning", "message": "E-mail not sent", "causes": ["smtp"]}],
            },
        }
    )
    assert execution.status is ExecutionStatus.WARNING
    assert (execution.flow_id, execution.flow_name, execution.created_at) == (
        "f1",
        "Invoice",
        "2024-05-01T10:00:00Z",
    )
    assert execution.warnings == (FlowException("DeliveryWarning", "E-mail not sent", ("smtp",)),)
    assert execution.errors == ()
    assert [d.id for d in execution.documents] == ["d1", "d2"]


def test_flow_exception_text_joins_error_message_and_causes():
    error = FlowException.from_json(
        {"error": "TemplateError", "message": "Field X missing", "causes": ["a", "b"]}
    )
    assert str(error) == "TemplateError: Field X missing (causes: a; b)"


def test_find_document_refs_walks_nested_blocks_in_order_and_deduplicates():
    data = {
        "B2": {"document": {"id": "d2", "displayName": "Two", "type": "document"}},
        "B1": [
            {"file": {"id": "d1", "type": "document"}},
            {"document": {"id": "d2", "displayName": "dup", "type": "document"}},
        ],
        "other": {"id": "x", "type": "flow"},
        "bad": {"id": None, "type": "document"},
    }
    assert find_document_refs(data) == [DocumentRef("d2", "Two"), DocumentRef("d1", None)]


def test_find_document_refs_survives_hostile_depth():
    deep: dict = {"id": "deep", "type": "document"}
    for _ in range(100_000):
        deep = {"x": deep}
    shallow = {"first": {"id": "near", "type": "document"}, "deep": deep}
    assert find_document_refs(shallow) == [DocumentRef("near", None)]


def test_document_info_derives_a_safe_file_name():
    info = DocumentInfo.from_json(
        {"id": "d1", "displayName": "../../etc/passwd", "contentType": "application/pdf", "size": 3}
    )
    assert info.file_name == "_._etc_passwd.pdf"


@pytest.mark.parametrize(
    ("content_type", "extension"),
    [
        ("application/pdf", ".pdf"),
        ("Application/PDF; charset=binary", ".pdf"),
        ("text/plain", ".txt"),
        ("application/x-unheard-of", ""),
        ("", ""),
        (None, ""),
    ],
    ids=["pdf", "case-and-parameters", "text", "unknown", "empty", "none"],
)
def test_extension_for(content_type: str | None, extension: str) -> None:
    assert extension_for(content_type) == extension


@pytest.mark.parametrize(
    ("content_type", "extension"),
    [
        ("application/pdf", ".pdf"),
        ("application/vnd.openxmlformats-officedocument.wordprocessingml.document", ".docx"),
        ("application/msword", ".doc"),
        ("application/vnd.openxmlformats-officedocument.spreadsheetml.sheet", ".xlsx"),
        ("text/html; charset=utf-8", ".html"),
        ("text/plain", ".txt"),
        ("application/xml", ".xml"),
        ("application/zip", ".zip"),
        ("image/png", ".png"),
        ("image/jpeg", ".jpg"),
        ("text/csv", ".csv"),
        ("application/x-unknown-thing", ""),
        (None, ""),
    ],
    ids=lambda v: str(v),
)
def test_safe_file_name_extension_from_content_type(content_type, extension):
    assert safe_file_name("Report", content_type, fallback="d1") == f"Report{extension}"


@pytest.mark.parametrize(
    "display_name",
    [
        "../../../etc/passwd",
        "..",
        "a/b\\c",
        "C:\\Windows\\evil",
        "name\x00with\nnull",
        "\u202eevil\u202dfdp.exe",
        "x" * 1000,
        "é" * 500,
        "CON",
        " . ",
        "",
        None,
    ],
    ids=[
        "traversal",
        "dotdot",
        "separators",
        "drive",
        "control",
        "rtl-override",
        "long",
        "long-utf8",
        "reserved",
        "dots",
        "empty",
        "none",
    ],
)
def test_safe_file_name_cannot_escape_or_overflow(display_name):
    name = safe_file_name(display_name, "application/pdf", fallback="doc-1")
    assert name.endswith(".pdf")
    assert "/" not in name
    assert "\\" not in name
    assert ".." not in name
    assert not any(ord(ch) < 32 for ch in name)
    assert len(name.encode("utf-8")) <= 200
    assert name not in (".pdf", "")
    assert not name.upper().startswith("CON.")


def test_safe_file_name_keeps_an_existing_matching_extension():
    assert safe_file_name("Invoice.PDF", "application/pdf", fallback="d") == "Invoice.pdf"


def test_safe_file_name_uses_fallback_for_empty_name():
    assert safe_file_name("", "application/pdf", fallback="doc-1") == "doc-1.pdf"


# --------------------------------------------------------------------------- exceptions

EXCEPTIONS = [
    SmartFlowsError("base"),
    SmartFlowsApiError("api", status_code=500, method="GET", path="/x", body_excerpt="oops", retryable=True),
    SmartFlowsConnectionError("net", method="POST", path="/x", request_sent=False),
    SmartFlowsAuthError("auth", status_code=401, conn_id="c"),
    SmartFlowsNotFoundError("nf", status_code=404),
    SmartFlowsExecutionError(execution_id="e1", status="Error", messages=["TemplateError: boom"]),
    SmartFlowsTimeoutError("slow"),
    SmartFlowsInputError("bad"),
    SmartFlowsDownloadError("cut", document_id="d1"),
]


@pytest.mark.parametrize("error", EXCEPTIONS, ids=lambda e: type(e).__name__)
def test_exceptions_pickle_round_trip(error):
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is type(error)
    assert str(copy) == str(error)
    assert copy.fields() == error.fields()


@pytest.mark.parametrize("error", EXCEPTIONS, ids=lambda e: type(e).__name__)
def test_exceptions_serialize_round_trip(error):
    path, args, kwargs = error.serialize()
    assert path.endswith(type(error).__name__)
    copy = type(error)(*args, **kwargs)
    assert str(copy) == str(error)
    assert copy.fields() == error.fields()


@pytest.mark.parametrize("error", EXCEPTIONS, ids=lambda e: type(e).__name__)
def test_every_error_says_whether_to_retry_and_whether_a_start_may_have_happened(error):
    assert (error.retryable, error.may_have_started) == (type(error) is SmartFlowsApiError, False)


def test_an_undeclared_field_is_refused():
    with pytest.raises(TypeError, match="SmartFlowsDownloadError has no field 'executon_id'"):
        SmartFlowsDownloadError("cut", executon_id="e1")


def test_fields_are_the_declared_ones_with_their_defaults():
    assert SmartFlowsConnectionError("net", reason="connection reset").fields() == {
        "retryable": False,
        "may_have_started": False,
        "status_code": None,
        "method": None,
        "path": None,
        "body_excerpt": None,
        "conn_id": None,
        "retry_after": None,
        "reason": "connection reset",
        "request_sent": True,
        "candidates": None,
    }


def test_a_start_unknown_error_takes_every_field_of_the_start_error():
    start = SmartFlowsConnectionError("net", reason="read timeout", may_have_started=True, conn_id="sf")
    assert SmartFlowsStartUnknownError(start.message, **start.fields()).fields() == start.fields()


def test_execution_error_message_names_execution_status_and_messages():
    error = SmartFlowsExecutionError(
        execution_id="e1", status="Error", messages=["TemplateError: Field X missing"], url="http://sf/e1"
    )
    assert str(error) == (
        "Smart Flows execution e1 ended with status Error: TemplateError: Field X missing. See http://sf/e1"
    )
    assert error.messages == ["TemplateError: Field X missing"]


def test_input_error_is_a_value_error():
    assert isinstance(SmartFlowsInputError("x"), ValueError)
    assert isinstance(SmartFlowsConnectionError("x"), SmartFlowsApiError)
    assert SmartFlowsConnectionError("x").status_code is None


def test_flow_exception_without_causes_prints_no_causes() -> None:
    from airflow_provider_smartflows.models import FlowException

    for raw in ({"error": "E", "message": "m", "causes": []}, {"error": "E", "message": "m"}):
        assert str(FlowException.from_json(raw)) == "E: m"

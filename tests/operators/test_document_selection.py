"""Selection (content_types=, name_pattern=) and expiry in the download operator, over HTTP against
the emulator, writing local files through ObjectStoragePath."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from airflow_provider_smartflows.exceptions import (
    SmartFlowsDocumentExpiredError,
    SmartFlowsDocumentGoneError,
    SmartFlowsInputError,
)
from airflow_provider_smartflows.hooks.smartflows import SmartFlowsHook
from airflow_provider_smartflows.operators.smartflows import (
    SmartFlowsDownloadDocumentsOperator,
    SmartFlowsRunFlowOperator,
)
from tests.support.dag_runs import make_dag

if TYPE_CHECKING:
    from airflow_provider_smartflows.emulator import EmulatorServer

pytestmark = pytest.mark.usefixtures("smartflows_conn")

DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
PACK = {
    "id": "t-pack",
    "displayName": "Invoice pack",
    "input": "none",
    "steps": [{"message": "Rendering", "percentage": 50, "seconds": 0.01}],
    "documents": [
        {"displayName": "Invoice 1"},
        {"displayName": "Invoice 1", "contentType": DOCX},
        {"displayName": "Terms"},
    ],
}


class FakeTaskInstance:
    """What the operator's execute() pushes besides its return value."""

    def __init__(self) -> None:
        self.pushed: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.pushed[key] = value


def run_pack(emulator: EmulatorServer, conn_id: str) -> tuple[str, list[str]]:
    """Run the pack flow to its end: (execution id, document ids in the execution's order)."""
    emulator.add_flow(PACK)
    hook = SmartFlowsHook(conn_id)
    execution_id = hook.start_execution("t-pack").id
    deadline = time.monotonic() + 30
    while not hook.get_progress(execution_id, wait_seconds=5).status.is_terminal:
        assert time.monotonic() < deadline
    return execution_id, [ref.id for ref in hook.list_documents(execution_id)]


def download(tmp_path: Path, execution_id: str, **kwargs: Any) -> tuple[list[str], FakeTaskInstance]:
    kwargs.setdefault("destination", f"file://{tmp_path}/out/")
    operator = SmartFlowsDownloadDocumentsOperator(task_id="download", execution_id=execution_id, **kwargs)
    ti = FakeTaskInstance()
    return operator.execute({"ti": ti}), ti  # type: ignore[arg-type]


def names(tmp_path: Path) -> list[str]:
    folder = tmp_path / "out"
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_default_writes_every_document(
    smartflows_emulator: Any, smartflows_conn: str, tmp_path: Path
) -> None:
    execution_id, _ = run_pack(smartflows_emulator, smartflows_conn)
    written, ti = download(tmp_path, execution_id)
    assert len(written) == 3
    assert names(tmp_path) == ["Invoice 1.docx", "Invoice 1.pdf", "Terms.pdf"]
    assert ti.pushed["skipped"] == []


def test_content_types_select_the_pdfs(
    smartflows_emulator: Any, smartflows_conn: str, tmp_path: Path
) -> None:
    execution_id, ids = run_pack(smartflows_emulator, smartflows_conn)
    _, ti = download(tmp_path, execution_id, content_types=["application/pdf"])
    assert names(tmp_path) == ["Invoice 1.pdf", "Terms.pdf"]
    (skipped,) = ti.pushed["skipped"]
    assert skipped["document_id"] == ids[1]
    assert skipped["content_type"] == DOCX
    assert "is not one of content_types" in skipped["reason"]
    # Nothing was asked for the skipped document's content.
    assert not smartflows_emulator.requests_to("GET", f"/documents/{ids[1]}/content$")


def test_name_pattern_is_case_insensitive(
    smartflows_emulator: Any, smartflows_conn: str, tmp_path: Path
) -> None:
    execution_id, _ = run_pack(smartflows_emulator, smartflows_conn)
    _, ti = download(tmp_path, execution_id, name_pattern="invoice*")
    assert names(tmp_path) == ["Invoice 1.docx", "Invoice 1.pdf"]
    assert [s["display_name"] for s in ti.pushed["skipped"]] == ["Terms"]


def test_both_conditions_must_hold(smartflows_emulator: Any, smartflows_conn: str, tmp_path: Path) -> None:
    execution_id, _ = run_pack(smartflows_emulator, smartflows_conn)
    _, ti = download(tmp_path, execution_id, content_types=["application/pdf"], name_pattern="Invoice*")
    assert names(tmp_path) == ["Invoice 1.pdf"]
    assert len(ti.pushed["skipped"]) == 2


def test_a_selection_of_one_goes_to_an_exact_file(
    smartflows_emulator: Any, smartflows_conn: str, tmp_path: Path
) -> None:
    execution_id, _ = run_pack(smartflows_emulator, smartflows_conn)
    target = tmp_path / "invoice.docx"
    (uri,) = download(tmp_path, execution_id, destination=f"file://{target}", content_types=[DOCX])[0]
    assert target.exists()
    assert uri.endswith("invoice.docx")


def test_a_selection_of_several_to_one_file_is_refused_before_writing(
    smartflows_emulator: Any, smartflows_conn: str, tmp_path: Path
) -> None:
    execution_id, _ = run_pack(smartflows_emulator, smartflows_conn)
    with pytest.raises(SmartFlowsInputError, match="2 documents selected but destination"):
        download(
            tmp_path,
            execution_id,
            destination=f"file://{tmp_path}/one.pdf",
            content_types=["application/pdf"],
        )
    assert not (tmp_path / "one.pdf").exists()


def test_near_expiry_is_downloaded_first_with_a_warning(
    smartflows_emulator: Any,
    smartflows_conn: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    execution_id, ids = run_pack(smartflows_emulator, smartflows_conn)
    smartflows_emulator.set_document_expiration(ids[2], 600)  # Terms: within the default hour
    with caplog.at_level("WARNING"):
        written, _ = download(tmp_path, execution_id, max_concurrency=1)
    contents = smartflows_emulator.requests_to("GET", r"/documents/[^/]+/content$")
    assert contents[0]["path"].endswith(f"/documents/{ids[2]}/content")
    assert written[0].endswith("Terms.pdf")
    # The task log: structlog's output on Airflow 3, the logging records on Airflow 2.
    captured = capsys.readouterr()
    said = caplog.text + captured.out + captured.err
    assert f"Document {ids[2]} (Terms) expires at" in said
    assert "downloading it first" in said


def test_an_expired_document_fails_before_anything_is_written(
    smartflows_emulator: Any, smartflows_conn: str, tmp_path: Path
) -> None:
    execution_id, ids = run_pack(smartflows_emulator, smartflows_conn)
    smartflows_emulator.set_document_expiration(ids[1], -60)
    with pytest.raises(SmartFlowsDocumentExpiredError, match=f"Document '{ids[1]}'.*expired at") as caught:
        download(tmp_path, execution_id)
    assert "Download documents sooner" in str(caught.value)
    assert "clean-up settings" in str(caught.value)
    assert caught.value.document_id == ids[1]
    assert names(tmp_path) == []
    assert not smartflows_emulator.requests_to("GET", r"/documents/[^/]+/content$")


def test_an_expired_document_left_out_by_the_selection_does_not_fail(
    smartflows_emulator: Any, smartflows_conn: str, tmp_path: Path
) -> None:
    execution_id, ids = run_pack(smartflows_emulator, smartflows_conn)
    smartflows_emulator.set_document_expiration(ids[1], -60)  # the DOCX
    download(tmp_path, execution_id, content_types=["application/pdf"])
    assert names(tmp_path) == ["Invoice 1.pdf", "Terms.pdf"]


def test_a_purged_document_still_fails_as_gone(
    smartflows_emulator: Any, smartflows_conn: str, tmp_path: Path
) -> None:
    _execution_id, ids = run_pack(smartflows_emulator, smartflows_conn)
    smartflows_emulator.purge_document(ids[0])
    with pytest.raises(SmartFlowsDocumentGoneError, match="purged by the server's clean-up"):
        download(tmp_path, "", document_ids=[ids[0]])
    assert names(tmp_path) == []


def test_requests_per_document(smartflows_emulator: Any, smartflows_conn: str, tmp_path: Path) -> None:
    """One metadata request per document (the skipped one too), one content request per written one."""
    execution_id, _ids = run_pack(smartflows_emulator, smartflows_conn)
    before = len(smartflows_emulator.requests_to("GET", r"/documents/[^/]+$"))
    download(tmp_path, execution_id, content_types=["application/pdf"])
    assert len(smartflows_emulator.requests_to("GET", r"/documents/[^/]+$")) - before == 3
    assert len(smartflows_emulator.requests_to("GET", r"/documents/[^/]+/content$")) == 2


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"content_types": []}, "empty list"),
        ({"content_types": ["pdf"]}, "'pdf' is not a content type"),
        ({"content_types": "application/pdf"}, "must be a list of content types"),
        ({"name_pattern": 42}, "name_pattern must be a non-empty text pattern"),
        ({"name_pattern": " "}, "name_pattern must be a non-empty text pattern"),
    ],
    ids=["empty-list", "no-slash", "bare-string", "not-a-string", "blank-pattern"],
)
def test_bad_selection_is_refused_at_construction(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(SmartFlowsInputError, match=message):
        SmartFlowsDownloadDocumentsOperator(
            task_id="d", destination="file:///tmp/x/", execution_id="e", **kwargs
        )


@pytest.mark.slow  # a dag.test() run
def test_selection_in_a_dag_run(run_dag: Any, smartflows_emulator: Any, tmp_path: Path) -> None:
    smartflows_emulator.add_flow(PACK)

    def build() -> None:
        generate = SmartFlowsRunFlowOperator(task_id="generate", flow_id="t-pack", poll_interval=2)
        download = SmartFlowsDownloadDocumentsOperator(
            task_id="download",
            execution_id="{{ ti.xcom_pull(task_ids='generate')['execution_id'] }}",
            destination=f"file://{tmp_path}/out/",
            content_types=["application/pdf"],
            name_pattern="Invoice*",
        )
        generate >> download

    result = run_dag(make_dag("selection", build))
    assert result.states == {"generate": "success", "download": "success"}
    assert [Path(uri).name for uri in result.xcom("download")] == ["Invoice 1.pdf"]
    assert names(tmp_path) == ["Invoice 1.pdf"]

"""The pure selection and expiry rules (airflow_provider_smartflows.documents)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from airflow_provider_smartflows.documents import DocumentSelection, plan_downloads
from airflow_provider_smartflows.exceptions import SmartFlowsDocumentExpiredError
from airflow_provider_smartflows.models import DocumentInfo

NOW = datetime(2026, 12, 5, 12, 0, tzinfo=timezone.utc)


def doc(doc_id: str, expires_in: float | None = None, **fields: str) -> DocumentInfo:
    data = {
        "id": doc_id,
        "displayName": fields.get("name", doc_id),
        "contentType": fields.get("type", "application/pdf"),
    }
    if expires_in is not None:
        data["expiration"] = (NOW + timedelta(seconds=expires_in)).isoformat()
    return DocumentInfo.from_json(data)


def test_near_documents_go_first_soonest_first_the_rest_in_order() -> None:
    docs = [doc("a"), doc("b", 3000), doc("c", 86400), doc("d", 60)]
    plan = plan_downloads(docs, DocumentSelection(), now=NOW, warning_seconds=3600)
    assert [d.id for d in plan.documents] == ["d", "b", "a", "c"]
    assert [d.id for d in plan.near] == ["d", "b"]


def test_the_first_expired_selected_document_raises() -> None:
    with pytest.raises(
        SmartFlowsDocumentExpiredError, match=r"Document 'b'.*expired at 2026-12-05T11:59:00Z, 60 s ago"
    ):
        plan_downloads([doc("a"), doc("b", -60)], DocumentSelection(), now=NOW, warning_seconds=3600)


@pytest.mark.parametrize(
    ("selection", "kept"),
    [
        (DocumentSelection.of(["APPLICATION/PDF"]), ["inv.pdf", "Terms"]),
        (DocumentSelection.of(["image/*"]), ["logo"]),
        (DocumentSelection.of(name_pattern="inv*"), ["inv.pdf", "INV-2"]),
        (DocumentSelection.of(["text/plain"], "inv*"), ["INV-2"]),
    ],
    ids=["type-any-case", "type-wildcard", "name-case-insensitive", "both"],
)
def test_selection(selection: DocumentSelection, kept: list[str]) -> None:
    docs = [
        doc("1", name="inv.pdf"),
        doc("2", name="INV-2", type="text/plain; charset=utf-8"),
        doc("3", name="Terms"),
        doc("4", name="logo", type="image/png"),
    ]
    plan = plan_downloads(docs, selection, now=NOW, warning_seconds=0)
    assert [d.display_name for d in plan.documents] == kept
    assert len(plan.skipped) == 4 - len(kept)


def test_a_document_without_a_content_type_is_not_of_any_type() -> None:
    info = DocumentInfo.from_json({"id": "x"})
    assert DocumentSelection.of(["application/pdf"]).skip_reason(info) is not None

"""Documents: metadata, streamed content with its headers, real PDF/DOCX bytes, sizes, hashes."""

from __future__ import annotations

import hashlib
import io
import re
import shutil
import subprocess
import zipfile
from typing import TYPE_CHECKING

import pytest

from .helpers import Api, find_documents

if TYPE_CHECKING:
    from pathlib import Path

    from airflow_provider_smartflows.emulator import EmulatorServer

pytestmark = pytest.mark.airflow_agnostic  # the emulator's own behaviour, the same on every Airflow line

DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"


def assert_valid_pdf(data: bytes) -> None:
    """Header, trailer, and every xref offset pointing at its "N 0 obj"."""
    assert data.startswith(b"%PDF-1.")
    assert data.rstrip().endswith(b"%%EOF")
    xref_pos = int(re.search(rb"startxref\s+(\d+)\s+%%EOF\s*$", data[-100:]).group(1))  # type: ignore[union-attr]
    assert data[xref_pos : xref_pos + 4] == b"xref"
    header = re.match(rb"xref\n0 (\d+)\n", data[xref_pos:])
    assert header
    count = int(header.group(1))
    rows = data[xref_pos + header.end() :].split(b"\n")[:count]
    assert rows[0].startswith(b"0000000000 65535 f")
    for number, row in enumerate(rows[1:], start=1):
        offset = int(row[:10])
        assert data[offset:].startswith(b"%d 0 obj" % number), number


def content(api: Api, doc_id: str) -> tuple[dict[str, str], bytes]:
    r = api.get(f"/documents/{doc_id}/content")
    assert r.status_code == 200
    return dict(r.headers), r.content


def test_document_metadata(api: Api) -> None:
    final, _ = api.run("hello")
    (ref,) = find_documents(final["model"])
    meta = api.get(f"/documents/{ref['id']}").json()
    assert meta["id"] == ref["id"]
    assert meta["displayName"] == "Hello"
    assert meta["contentType"] == "application/pdf"
    assert meta["flowExecution"]["id"] == final["id"]
    assert meta["expiration"] > meta["createdAt"]


def test_pdf_content_headers_and_validity(api: Api, emu: EmulatorServer) -> None:
    dynamics = {"id": ["INV-042"], "entity": "invoice"}
    final, _ = api.run("invoice", json=dynamics)
    (ref,) = find_documents(final["model"])
    headers, data = content(api, ref["id"])
    assert headers["Content-Type"] == "application/pdf"
    assert int(headers["Content-Length"]) == len(data) == emu.document_size(ref["id"])
    assert 'filename="Invoice INV-042.pdf"' in headers["Content-Disposition"]
    assert headers["Content-Disposition"].startswith("attachment;")
    assert_valid_pdf(data)
    assert b"(Invoice INV-042) Tj" in data
    assert b"Flow: Invoice" in data
    assert b"records: INV-042" in data
    assert hashlib.sha256(data).hexdigest() == emu.document_sha256(ref["id"])


def test_pdf_renders_with_pdftoppm(api: Api, tmp_path: Path) -> None:
    if shutil.which("pdftoppm") is None:
        pytest.skip("pdftoppm is not installed")
    final, _ = api.run("hello")
    (ref,) = find_documents(final["model"])
    pdf = tmp_path / "hello.pdf"
    pdf.write_bytes(content(api, ref["id"])[1])
    subprocess.run(["pdftoppm", "-r", "20", "-png", str(pdf), str(tmp_path / "page")], check=True, timeout=60)
    assert list(tmp_path.glob("page*.png"))


@pytest.mark.parametrize("size", [5000, 99_999, 1_000_000, 2**20 + 7])
def test_sized_pdf_is_exactly_that_big_and_still_valid(emu: EmulatorServer, api: Api, size: int) -> None:
    emu.add_flow({"id": "big", "steps": [], "documents": [{"displayName": "Big", "size": size}]})
    final, _ = api.run("big")
    (ref,) = find_documents(final["model"])
    headers, data = content(api, ref["id"])
    assert len(data) == size == int(headers["Content-Length"])
    assert_valid_pdf(data)
    assert hashlib.sha256(data).hexdigest() == emu.document_sha256(ref["id"])


def test_docx_is_a_real_zip(api: Api) -> None:
    final, _ = api.run(
        "xml-letter", data=b"<letter><to>Ada</to></letter>", headers={"Content-Type": "application/xml"}
    )
    docs = {d["id"]: d for d in find_documents(final["model"])}
    metas = [api.get(f"/documents/{i}").json() for i in docs]
    (docx,) = [m for m in metas if m["contentType"] == DOCX]
    headers, data = content(api, docx["id"])
    assert 'filename="Letter.docx"' in headers["Content-Disposition"]
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        assert b"Ada" in zf.read("word/document.xml")


def test_multi_docs_same_display_name(api: Api) -> None:
    final, execution = api.run("multi-docs")
    docs = find_documents(final["model"])
    assert len(docs) == 3
    assert len({d["id"] for d in docs}) == 3
    assert {d["displayName"] for d in docs} == {"Report"}
    assert {d["id"] for d in find_documents(execution["state"]["output"]["model"])} == {d["id"] for d in docs}
    types = sorted(api.get(f"/documents/{d['id']}").json()["contentType"] for d in docs)
    assert types == ["application/pdf", "application/pdf", DOCX]


def test_failed_executions_have_no_documents(api: Api) -> None:
    final, execution = api.run("error")
    assert find_documents(final) == []
    assert find_documents(execution) == []

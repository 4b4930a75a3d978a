"""download_document: streaming, atomic, verified, and safe with hostile names."""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import threading
import tracemalloc
from typing import ClassVar

import pytest
import requests
from airflow.providers.common.compat.sdk import ObjectStoragePath

from airflow_provider_smartflows.exceptions import SmartFlowsDownloadError, SmartFlowsInputError
from airflow_provider_smartflows.hooks.smartflows import SmartFlowsHook
from airflow_provider_smartflows.models import DownloadedDocument
from tests.support.waits import progress_until

GIB = 1 << 30
MIB = 1 << 20


def run_flow(hook, flow_id):
    execution_id = hook.start_execution(flow_id).id
    progress_until(hook, execution_id, timeout=30)
    return hook.list_documents(execution_id)


def add_document_flow(emulator, flow_id, *documents):
    return emulator.add_flow(
        {
            "id": flow_id,
            "steps": [{"message": "Generating", "percentage": 50, "seconds": 0.1}],
            "documents": list(documents),
        }
    )


def files_in(folder):
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*"))


def test_download_into_a_folder_names_the_file_from_the_document(smartflows_emulator, hook, tmp_path):
    (document,) = run_flow(hook, "hello")
    result = hook.download_document(document.id, f"file://{tmp_path}/out/")
    assert result == DownloadedDocument(
        document_id=document.id,
        uri=f"file://{tmp_path}/out/Hello.pdf",
        size=smartflows_emulator.document_size(document.id),
        sha256=smartflows_emulator.document_sha256(document.id),
        content_type="application/pdf",
    )
    assert (tmp_path / "out" / "Hello.pdf").read_bytes().startswith(b"%PDF")
    assert files_in(tmp_path) == ["out", "out/Hello.pdf"]
    (request,) = smartflows_emulator.requests_to("GET", "/content$")
    assert request["headers"]["Accept-Encoding"] == "identity"


def test_download_to_an_exact_object_storage_path(smartflows_emulator, hook, tmp_path):
    (document,) = run_flow(hook, "hello")
    target = ObjectStoragePath(f"file://{tmp_path}/exact-name.bin")
    result = hook.download_document(document.id, target)
    assert result.uri == str(target)
    assert result.content_type == "application/pdf"
    assert hashlib.sha256((tmp_path / "exact-name.bin").read_bytes()).hexdigest() == result.sha256


def test_download_into_an_existing_directory_path(smartflows_emulator, hook, tmp_path):
    (document,) = run_flow(hook, "hello")
    result = hook.download_document(document.id, ObjectStoragePath(f"file://{tmp_path}"))
    assert result.uri.endswith("/Hello.pdf")
    assert files_in(tmp_path) == ["Hello.pdf"]


def test_download_of_docx_gets_its_extension(smartflows_emulator, hook, tmp_path):
    documents = run_flow(hook, "multi-docs")
    names = set()
    for document in documents:
        names.add(hook.download_document(document.id, f"{tmp_path}/{document.id}/").uri.rsplit("/", 1)[-1])
    assert names == {"Report.pdf", "Report.docx"}


def test_existing_target_is_an_error_unless_overwrite(smartflows_emulator, hook, tmp_path):
    (document,) = run_flow(hook, "hello")
    target = tmp_path / "Hello.pdf"
    target.write_bytes(b"precious")
    with pytest.raises(SmartFlowsDownloadError, match=r"Hello.pdf already exists.*overwrite=True"):
        hook.download_document(document.id, f"{tmp_path}/")
    assert target.read_bytes() == b"precious"
    assert smartflows_emulator.requests_to("GET", "/content$") == []
    hook.download_document(document.id, f"{tmp_path}/", overwrite=True)
    assert target.read_bytes().startswith(b"%PDF")
    assert files_in(tmp_path) == ["Hello.pdf"]


@pytest.mark.parametrize("cut", [None, 0], ids=["half", "headers-only"])
def test_truncated_body_leaves_no_file(smartflows_emulator, hook, tmp_path, cut):
    (document,) = run_flow(hook, "hello")
    smartflows_emulator.add_fault("truncate", path="/content$", body=cut)
    with pytest.raises(
        SmartFlowsDownloadError, match=f"Downloading document '{document.id}'.*Nothing was saved"
    ):
        hook.download_document(document.id, f"{tmp_path}/")
    assert files_in(tmp_path) == []  # neither the target nor the temporary file


def test_truncated_large_body_leaves_no_file(smartflows_emulator, hook, tmp_path):
    add_document_flow(smartflows_emulator, "t-big", {"displayName": "Big", "size": 8 * MIB})
    (document,) = run_flow(hook, "t-big")
    smartflows_emulator.add_fault("truncate", path="/content$", body=5 * MIB)
    with pytest.raises(SmartFlowsDownloadError):
        hook.download_document(document.id, f"{tmp_path}/big.pdf")
    assert files_in(tmp_path) == []


def test_content_not_found_leaves_no_file(smartflows_emulator, hook, tmp_path):
    with pytest.raises(Exception, match="Document 'gone' was not found"):
        hook.download_document("gone", f"{tmp_path}/gone.pdf")
    assert files_in(tmp_path) == []


def test_content_not_found_creates_no_folder(smartflows_emulator, hook, tmp_path):
    # The target is checked before the content request, but nothing is created until bytes arrive.
    with pytest.raises(Exception, match="Document 'gone' was not found"):
        hook.download_document("gone", f"{tmp_path}/new/sub/gone.pdf")
    assert files_in(tmp_path) == []


def test_download_content_is_retried_on_503(smartflows_emulator, hook, tmp_path):
    (document,) = run_flow(hook, "hello")
    smartflows_emulator.add_fault("status", path="/content$", status=503)
    result = hook.download_document(document.id, f"{tmp_path}/")
    assert result.sha256 == smartflows_emulator.document_sha256(document.id)
    assert [r["status"] for r in smartflows_emulator.requests_to("GET", "/content$")] == [503, 200]


@pytest.mark.parametrize(
    "display_name",
    [
        "../../../escape",
        "..",
        "sub/dir/name",
        "..\\..\\windows",
        "/etc/passwd",
        "line\nbreak\x07bell",
        "\u202eright-to-left",
        "x" * 400,
        "ü" * 300,
        "NUL",
    ],
    ids=[
        "traversal",
        "dotdot",
        "slashes",
        "backslashes",
        "absolute",
        "control",
        "bidi",
        "long",
        "long-utf8",
        "reserved",
    ],
)
def test_hostile_display_names_stay_inside_the_folder(smartflows_emulator, hook, tmp_path, display_name):
    add_document_flow(smartflows_emulator, "t-hostile", {"displayName": display_name})
    (document,) = run_flow(hook, "t-hostile")
    folder = tmp_path / "inbox"
    result = hook.download_document(document.id, f"{folder}/")
    (saved,) = list(folder.iterdir())
    assert saved.parent == folder
    assert result.uri.endswith("/" + saved.name)
    assert saved.name.endswith(".pdf")
    assert len(saved.name.encode()) <= 200
    assert files_in(tmp_path) == ["inbox", f"inbox/{saved.name}"]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"chunk_size": 0}, "chunk_size"), ({"chunk_size": 1.5}, "chunk_size")],
    ids=["zero-chunk", "float-chunk"],
)
def test_bad_download_arguments(smartflows_emulator, hook, tmp_path, kwargs, match):
    with pytest.raises(SmartFlowsInputError, match=match):
        hook.download_document("d1", f"{tmp_path}/", **kwargs)
    assert smartflows_emulator.requests == []


def test_bad_destination_type(smartflows_emulator, hook):
    with pytest.raises(SmartFlowsInputError, match="destination must be"):
        hook.download_document("d1", 42)


@pytest.mark.slow  # 1 GiB download
@pytest.mark.serial  # streams 1 GiB on both cores: make test runs it alone
@pytest.mark.parametrize("as_path", [False, True], ids=["file-uri", "object-storage-path"])
def test_one_gib_download_keeps_the_heap_small(smartflows_emulator, hook, tmp_path, as_path):
    add_document_flow(smartflows_emulator, "t-gib", {"displayName": "Huge", "size": GIB})
    (document,) = run_flow(hook, "t-gib")
    uri = f"file://{tmp_path}/huge.pdf"
    destination = ObjectStoragePath(uri) if as_path else uri
    tracemalloc.start()
    try:
        result = hook.download_document(document.id, destination)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 32 * MIB, f"heap peak {peak / MIB:.1f} MiB"
    assert result.size == GIB
    assert (tmp_path / "huge.pdf").stat().st_size == GIB
    assert result.sha256 == smartflows_emulator.document_sha256(document.id)
    assert files_in(tmp_path) == ["huge.pdf"]


class _ChunkedHandler(http.server.BaseHTTPRequestHandler):
    """A document body without Content-Length (chunked), complete or cut before its last chunk.

    Smart Flows may stream content chunked; the emulator always sends Content-Length, so this small
    server plays that part (real HTTP on loopback)."""

    protocol_version = "HTTP/1.1"
    parts: ClassVar[list[bytes]] = [b"%PDF-1.4 ", os.urandom(3 * MIB), b"%%EOF"]
    complete = True

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/pdf")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for part in self.parts:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
        if self.complete:
            self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()
        self.close_connection = True

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def chunked_server(monkeypatch):
    def start(*, complete: bool) -> SmartFlowsHook:
        handler = type("Handler", (_ChunkedHandler,), {"complete": complete})
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        servers.append((server, thread))
        host = f"http://127.0.0.1:{server.server_address[1]}"
        monkeypatch.setenv(
            "AIRFLOW_CONN_SF_CHUNKED",
            json.dumps({"conn_type": "smartflows", "host": host, "password": "k"}),
        )
        return SmartFlowsHook("sf_chunked", timeout=5, retry_limit=1, retry_delay=0.01)

    servers: list = []
    try:
        yield start
    finally:
        for server, thread in servers:
            server.shutdown()
            server.server_close()
            thread.join()


def test_complete_chunked_body_is_saved(chunked_server, tmp_path):
    hook = chunked_server(complete=True)
    data = b"".join(_ChunkedHandler.parts)
    result = hook.download_document("doc-1", f"{tmp_path}/doc.pdf")
    assert (result.size, result.sha256) == (len(data), hashlib.sha256(data).hexdigest())
    assert (tmp_path / "doc.pdf").read_bytes() == data


def test_chunked_body_cut_before_its_last_chunk_leaves_nothing(chunked_server, tmp_path):
    hook = chunked_server(complete=False)
    with pytest.raises(
        SmartFlowsDownloadError, match=r"Downloading document 'doc-1'.*Nothing was saved"
    ) as err:
        hook.download_document("doc-1", f"{tmp_path}/doc.pdf")
    assert isinstance(err.value.__cause__, requests.exceptions.ChunkedEncodingError)
    assert files_in(tmp_path) == []

"""The whole download, Smart Flows emulator → store, on file, S3 (moto), GCS (emulator) and Azure
(Azurite): names, overwrite, missing buckets, truncated bodies, lineage names, memory."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from airflow_provider_smartflows.exceptions import SmartFlowsDownloadError
from airflow_provider_smartflows.hooks.download import DOCUMENT_ID_KEY, EXECUTION_ID_KEY
from airflow_provider_smartflows.storage import SHA256_KEY, lineage_dataset
from tests.support.waits import progress_until

if TYPE_CHECKING:
    from airflow_provider_smartflows.hooks.smartflows import SmartFlowsHook
    from tests.storage.stores import Store

MIB = 1 << 20
ROOT = Path(__file__).resolve().parents[2]


def generate(emulator: Any, hook: SmartFlowsHook, *documents: dict) -> tuple[str, list[str]]:
    """Run a flow making ``documents``; return the execution id and the document ids."""
    flow_id = emulator.add_flow(
        {
            "id": f"t-{uuid.uuid4().hex[:8]}",
            "steps": [{"message": "Generating", "percentage": 50, "seconds": 0.1}],
            "documents": list(documents),
        }
    )
    execution_id = hook.start_execution(flow_id).id
    progress_until(hook, execution_id, timeout=60)
    return execution_id, [ref.id for ref in hook.list_documents(execution_id)]


HOSTILE = {
    "traversal": "../../../escape",
    "slashes": "sub/dir/name",
    "backslashes": "..\\..\\windows",
    "url-syntax": "a?b#c%2e%2e&d=e",
    "control": "line\nbreak\x07bell",
    "bidi": "\u202eright-to-left",
    "long-utf8": "ü" * 300,
    "dotdot": "..",
}


@pytest.mark.parametrize("display_name", list(HOSTILE.values()), ids=list(HOSTILE))
def test_hostile_display_names_stay_one_object_inside_the_prefix(
    store: Store, smartflows_emulator: Any, hook: SmartFlowsHook, display_name: str
) -> None:
    execution_id, (document_id,) = generate(smartflows_emulator, hook, {"displayName": display_name})
    result = hook.download_document(
        document_id, store.uri("inbox/"), conn_id=store.conn_id, execution_id=execution_id
    )
    (key,) = store.keys()
    assert key.startswith("inbox/")
    name = key[len("inbox/") :]
    assert "/" not in name
    assert "\\" not in name
    assert name not in (".", "..")
    assert name.endswith(".pdf")
    assert len(name.encode()) <= 200
    assert result.uri.endswith("/" + name)
    assert result.sha256 == smartflows_emulator.document_sha256(document_id)
    assert hashlib.sha256(store.read(key)).hexdigest() == result.sha256  # read back with the store's SDK
    if store.kind != "file":
        metadata = store.metadata(key)
        assert metadata[DOCUMENT_ID_KEY] == document_id
        assert metadata[EXECUTION_ID_KEY] == execution_id
        assert metadata[SHA256_KEY] == result.sha256


def test_existing_object_is_kept_and_not_downloaded_without_overwrite(
    store: Store, smartflows_emulator: Any, hook: SmartFlowsHook
) -> None:
    _, (document_id,) = generate(smartflows_emulator, hook, {"displayName": "Letter"})
    hook.download_document(document_id, store.uri("out/"), conn_id=store.conn_id)
    before = store.read("out/Letter.pdf")
    gets = len(smartflows_emulator.requests_to("GET", "/content$"))
    with pytest.raises(SmartFlowsDownloadError, match=r"Letter.pdf already exists.*overwrite=True"):
        hook.download_document(document_id, store.uri("out/"), conn_id=store.conn_id)
    assert len(smartflows_emulator.requests_to("GET", "/content$")) == gets  # refused before the GET
    assert store.read("out/Letter.pdf") == before
    assert store.keys() == ["out/Letter.pdf"]


def test_overwrite_replaces_the_object(store: Store, smartflows_emulator: Any, hook: SmartFlowsHook) -> None:
    _, (document_id,) = generate(smartflows_emulator, hook, {"displayName": "Letter", "size": 3 * MIB})
    path = store.path("out/Letter.pdf")
    if store.kind == "file":
        path.parent.mkdir(parents=True)
    with path.open("wb") as f:
        f.write(b"older")
    result = hook.download_document(document_id, store.uri("out/"), conn_id=store.conn_id, overwrite=True)
    assert result.size == 3 * MIB
    assert store.keys() == ["out/Letter.pdf"]
    assert result.sha256 == smartflows_emulator.document_sha256(document_id)
    assert hashlib.sha256(store.read("out/Letter.pdf")).hexdigest() == result.sha256


@pytest.mark.parametrize(
    ("destination", "key"),
    [("out/", "out/Letter.pdf"), ("out/exact.bin", "out/exact.bin")],
    ids=["folder", "exact"],
)
def test_the_object_gets_the_documents_content_type(
    store: Store, smartflows_emulator: Any, hook: SmartFlowsHook, destination: str, key: str
) -> None:
    """Into a folder it is the document's; to an exact target the response's (known only once the
    content request is answered, after the target checks)."""
    if store.kind == "file":
        pytest.skip("local files keep no content type")
    _, (document_id,) = generate(smartflows_emulator, hook, {"displayName": "Letter"})
    result = hook.download_document(document_id, store.uri(destination), conn_id=store.conn_id)
    assert result.content_type == "application/pdf"
    assert store.content_type(key) == "application/pdf"


def test_truncated_body_leaves_nothing(store: Store, smartflows_emulator: Any, hook: SmartFlowsHook) -> None:
    _, (document_id,) = generate(smartflows_emulator, hook, {"displayName": "Big", "size": 12 * MIB})
    smartflows_emulator.add_fault("truncate", path="/content$", body=10 * MIB)
    with pytest.raises(SmartFlowsDownloadError, match=r"Nothing was saved"):
        hook.download_document(document_id, store.uri("out/big.pdf"), conn_id=store.conn_id)
    assert store.keys() == []
    if store.kind == "s3":
        assert store.pending_uploads() == 0  # the multipart upload was aborted


@pytest.mark.parametrize("store", ["s3", "gcs", "azure"], indirect=True)
def test_missing_bucket_fails_before_the_download_and_creates_nothing(
    store: Store, smartflows_emulator: Any, hook: SmartFlowsHook
) -> None:
    _, (document_id,) = generate(smartflows_emulator, hook, {"displayName": "Letter"})
    before = store.buckets()
    word = "container" if store.kind == "azure" else "bucket"
    conn = store.conn_id or store.prefix.split("://", 1)[1].split("@", 1)[0]
    with pytest.raises(
        SmartFlowsDownloadError, match=rf"The {word} 'no-such-bucket-d1' .* connection '{conn}'"
    ):
        hook.download_document(
            document_id, store.uri("out/doc.pdf", bucket="no-such-bucket-d1"), conn_id=store.conn_id
        )
    assert store.buckets() == before
    assert smartflows_emulator.requests_to("GET", "/content$") == []


def test_lineage_names(store: Store) -> None:
    namespace, name = lineage_dataset(store.path("a/b.pdf"))
    expected = {
        "file": ("file", f"{store.prefix[len('file://') :]}/a/b.pdf"),
        "s3": (f"s3://{store.bucket}", "a/b.pdf"),
        "gcs": (f"gs://{store.bucket}", "a/b.pdf"),
        "azure": (f"wasbs://{store.bucket}@devstoreaccount1", "a/b.pdf"),
    }
    assert (namespace, name) == expected[store.kind]


@pytest.mark.slow  # 256 MiB download
@pytest.mark.parametrize("store", ["s3", "azure", "gcs", "file"], indirect=True)
def test_memory_of_a_256_mib_download_is_bounded(
    store: Store, smartflows_emulator: Any, hook: SmartFlowsHook
) -> None:
    """The whole download's own RSS (HTTP response + upload), measured in a subprocess."""
    size = 256 * MIB
    _, (document_id,) = generate(smartflows_emulator, hook, {"displayName": "Big", "size": size})
    conn = ["--conn-id", store.conn_id] if store.conn_id else []
    result = subprocess.run(
        [sys.executable, "-m", "tests.storage.download_child", document_id, store.uri("big.pdf"), *conn],
        capture_output=True,
        env={**os.environ, **store.env},
        cwd=ROOT,
        timeout=900,
        check=False,
    )
    assert result.returncode == 0, result.stderr.decode()[-3000:]
    report = json.loads(result.stdout.decode().strip().splitlines()[-1])
    grown = report["rss_peak"] - report["rss_before"]
    print(f"{store.kind}: the download's own RSS {grown / MIB:.1f} MiB")
    assert (report["size"], report["sha256"]) == (size, smartflows_emulator.document_sha256(document_id))
    assert grown <= 32 * MIB, f"{store.kind}: {grown / MIB:.1f} MiB"
    assert store.keys() == ["big.pdf"]


def test_the_target_is_checked_once_per_download(
    store: Store, smartflows_emulator: Any, hook: SmartFlowsHook, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bucket and "already exists" checks run once, in the atomic writer (they ran twice)."""
    _, (document_id,) = generate(smartflows_emulator, hook, {"displayName": "Letter"})
    fs = store.path("out/Letter.pdf").fs
    asked: list[str] = []
    exists = fs.exists
    monkeypatch.setattr(
        fs, "exists", lambda path, **kwargs: asked.append(str(path)) or exists(path, **kwargs)
    )
    hook.download_document(document_id, store.uri("out/Letter.pdf"), conn_id=store.conn_id)
    expected = ["out/Letter.pdf"] if store.kind == "file" else [store.bucket, "out/Letter.pdf"]
    assert len(asked) == len(expected), asked  # the bucket once (object stores), the object once
    assert all(path.endswith(end) for path, end in zip(asked, expected, strict=True)), asked
    assert store.keys() == ["out/Letter.pdf"]

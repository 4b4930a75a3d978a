"""The block writers of ``storage_large`` against the emulated stores: several blocks in flight
give the exact bytes, memory stays at (in flight + 1) blocks, and an abort, a failed block or an
existing object leave nothing visible and no upload behind."""

from __future__ import annotations

import hashlib
import os
import threading
import tracemalloc
from typing import TYPE_CHECKING, Any

import pytest

from airflow_provider_smartflows.exceptions import SmartFlowsDownloadError
from airflow_provider_smartflows.storage import SHA256_KEY, open_atomic
from airflow_provider_smartflows.storage_large import IN_FLIGHT, BlockWriter

if TYPE_CHECKING:
    from tests.storage.stores import Store

MIB = 1 << 20
#: The smallest block each store accepts for a multi-block upload (S3: 5 MiB parts; GCS chunks are
#: multiples of 256 KiB), so that a test moves few bytes through many blocks.
BLOCK = {"s3": 5 * MIB, "azure": MIB, "gcs": MIB}
LARGE_STORES = ["s3", "azure", "gcs"]


@pytest.fixture
def uploads(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """The most block uploads (S3 ``UploadPart``, Azure ``Put Block``, GCS chunk) seen on the wire at
    once, counted around aiohttp's request (the transport of s3fs, adlfs and gcsfs)."""
    import aiohttp

    seen = {"now": 0, "most": 0}
    lock = threading.Lock()
    request = aiohttp.ClientSession._request

    async def counted(session: Any, method: str, url: Any, *args: Any, **kwargs: Any) -> Any:
        query = str(url)
        block = "partNumber=" in query or "comp=block&" in query or "upload_id=" in query
        if not block:
            return await request(session, method, url, *args, **kwargs)
        with lock:
            seen["now"] += 1
            seen["most"] = max(seen["most"], seen["now"])
        try:
            return await request(session, method, url, *args, **kwargs)
        finally:
            with lock:
                seen["now"] -= 1

    monkeypatch.setattr(aiohttp.ClientSession, "_request", counted)
    return seen


def blocks_writer(store: Store, key: str, **kwargs: Any) -> BlockWriter:
    writer = open_atomic(store.path(key), block_size=BLOCK[store.kind], **kwargs)
    assert isinstance(writer, BlockWriter)
    return writer


def feed(writer: Any, data: bytes, chunk: int = MIB) -> None:
    for start in range(0, len(data), chunk):
        writer.write(data[start : start + chunk])


def write_and_commit(writer: Any, data: bytes) -> None:
    feed(writer, data)
    writer.commit()


@pytest.mark.parametrize("store", LARGE_STORES, indirect=True)
def test_blocks_in_flight_give_the_exact_bytes(store: Store, uploads: dict[str, int]) -> None:
    block = BLOCK[store.kind]
    data = os.urandom(7 * block + 12345)
    metadata = {"smartflows_document_id": "doc-7"}
    with blocks_writer(store, "big.pdf", metadata=metadata, content_type="application/pdf") as writer:
        feed(writer, data, chunk=block // 3 + 1)  # chunks straddle the blocks' edges
        stored = writer.commit(len(data))
    assert (
        hashlib.sha256(store.read("big.pdf")).hexdigest() == stored.sha256 == hashlib.sha256(data).hexdigest()
    )
    assert store.keys() == ["big.pdf"]
    assert store.pending_uploads() == 0
    found = store.metadata("big.pdf")
    assert {k: found.get(k) for k in (*metadata, SHA256_KEY)} == {**metadata, SHA256_KEY: stored.sha256}
    assert store.content_type("big.pdf") == "application/pdf"
    assert writer.peak_in_flight == IN_FLIGHT[store.kind]
    assert min(2, IN_FLIGHT[store.kind]) <= uploads["most"] <= IN_FLIGHT[store.kind]


@pytest.mark.parametrize("store", LARGE_STORES, indirect=True)
def test_memory_is_the_blocks_in_flight_plus_one(store: Store) -> None:
    """Python allocations during the write (tracemalloc's peak): the blocks, not copies of them."""
    block = BLOCK[store.kind]
    data = os.urandom(12 * block)
    writer = blocks_writer(store, "big.bin", overwrite=True)
    tracemalloc.start()
    try:
        feed(writer, data)
        writer.commit(len(data))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    blocks = IN_FLIGHT[store.kind] + 1
    # Beside the blocks: MiB-sized transients (the caller's chunk, the client's checksum reads).
    # One copy of each block in flight (what aiohttp makes of a bytes body) would add `block` each.
    assert peak <= blocks * block + 4 * MIB, (
        f"{peak / MIB:.1f} MiB for {blocks} blocks of {block / MIB:.0f} MiB"
    )
    assert store.read("big.bin") == data


@pytest.mark.parametrize("store", LARGE_STORES, indirect=True)
def test_abort_with_blocks_in_flight_leaves_nothing(store: Store) -> None:
    block = BLOCK[store.kind]
    writer = blocks_writer(store, "doc.pdf")
    feed(writer, os.urandom(2 * block))  # the second block was just handed over: in flight
    writer.abort()
    assert store.keys() == []
    assert not store.path("doc.pdf").exists()
    if store.kind == "s3":  # Azure keeps staged blocks (uncommitted, invisible) until it expires them
        assert store.pending_uploads() == 0


@pytest.mark.parametrize("store", LARGE_STORES, indirect=True)
def test_existing_object_is_refused_at_the_commit_and_kept(store: Store) -> None:
    if store.kind == "gcs":
        pytest.skip("the GCS emulator ignores ifGenerationMatch=0 (real GCS refuses the last chunk with 412)")
    with open_atomic(store.path("doc.pdf")) as first:
        first.write(b"precious")
        first.commit(8)
    writer = open_atomic(store.path("doc.pdf"), block_size=BLOCK[store.kind], probe=False)  # no probe
    feed(writer, os.urandom(2 * BLOCK[store.kind] + 1))
    with pytest.raises(SmartFlowsDownloadError, match=r"doc.pdf: it already exists.*overwrite=True"):
        writer.commit()
    assert store.read("doc.pdf") == b"precious"
    assert store.keys() == ["doc.pdf"]
    assert store.pending_uploads() == 0


@pytest.mark.parametrize("store", ["s3"], indirect=True)
def test_a_failed_part_aborts_the_upload(store: Store) -> None:
    """The upload disappears under the writer (as a lifecycle rule would abort it): the next parts
    fail on the server, the commit raises, and nothing is left."""
    block = BLOCK[store.kind]
    writer = blocks_writer(store, "doc.pdf")
    feed(writer, os.urandom(block))  # part 1 is on its way: the multipart upload exists
    (upload,) = store.client.list_multipart_uploads(Bucket=store.bucket)["Uploads"]
    store.client.abort_multipart_upload(Bucket=store.bucket, Key=upload["Key"], UploadId=upload["UploadId"])
    # NoSuchUpload (s3fs: FileNotFoundError); moto answers 500 to a part racing the abort.
    with pytest.raises(OSError, match=r"upload does not exist|Internal Server Error"):
        write_and_commit(writer, os.urandom(4 * block))
    assert store.keys() == []
    assert store.pending_uploads() == 0
    with pytest.raises(ValueError, match="already committed or aborted"):
        writer.write(b"more")

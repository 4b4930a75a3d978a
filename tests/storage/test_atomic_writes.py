"""open_atomic against real (emulated) stores: file, S3 (moto), GCS (emulator), Azure (Azurite)."""

from __future__ import annotations

import hashlib
import json
import os
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from airflow_provider_smartflows.exceptions import SmartFlowsDownloadError, SmartFlowsInputError
from airflow_provider_smartflows.storage import (
    DEFAULT_BLOCK_SIZES,
    SHA256_KEY,
    StoredObject,
    check_destination,
    open_atomic,
    store_kind,
)
from tests.support.waits import wait_until

if TYPE_CHECKING:
    from tests.storage.stores import Store

MIB = 1 << 20
ROOT = Path(__file__).resolve().parents[2]


def chunks(total: int, size: int = MIB):
    for start in range(0, total, size):
        yield os.urandom(min(size, total - start))


def write(store: Store, key: str, data: bytes, **kwargs) -> StoredObject:
    with open_atomic(store.path(key), **kwargs) as writer:
        for start in range(0, len(data), MIB):
            writer.write(data[start : start + MIB])
        return writer.commit(len(data))


def test_store_kinds(store: Store) -> None:
    assert store_kind(store.path("a/b.bin")) == store.kind


def test_complete_write_reads_back_with_its_sha256(store: Store) -> None:
    data = b"".join(chunks(2 * DEFAULT_BLOCK_SIZES[store.kind] + 12345))
    stored = write(store, "out/doc.pdf", data, content_type="application/pdf")
    assert stored == StoredObject(str(store.path("out/doc.pdf")), len(data), hashlib.sha256(data).hexdigest())
    assert hashlib.sha256(store.read("out/doc.pdf")).hexdigest() == stored.sha256
    assert store.keys() == ["out/doc.pdf"]
    assert store.pending_uploads() == 0


@pytest.mark.parametrize("size", [0, 1, MIB + 1], ids=["empty", "one-byte", "one-mib-and-a-byte"])
def test_small_writes(store: Store, size: int) -> None:
    data = os.urandom(size)
    write(store, "small.bin", data)
    assert store.read("small.bin") == data


def write_then_fail(target: object, block: int) -> None:
    with open_atomic(target) as writer:  # type: ignore[arg-type]
        for i, chunk in enumerate(chunks(3 * block)):
            writer.write(chunk)
            if i == 2 * block // MIB:  # at least one block was uploaded
                raise ConnectionResetError("the source went away")


def test_exception_mid_stream_leaves_nothing(store: Store) -> None:
    target = store.path("doc.pdf")
    with pytest.raises(ConnectionResetError, match="the source went away"):
        write_then_fail(target, DEFAULT_BLOCK_SIZES[store.kind])
    assert store.keys() == []
    assert not target.exists()
    if store.kind == "s3":
        assert store.pending_uploads() == 0  # the multipart upload was aborted
    # Azure has no way to drop staged blocks: they stay uncommitted (invisible) until it expires them.


def test_size_mismatch_at_commit_leaves_nothing(store: Store) -> None:
    writer = open_atomic(store.path("short.pdf"))
    for chunk in chunks(3 * MIB):
        writer.write(chunk)
    with pytest.raises(SmartFlowsDownloadError, match=r"3145728 bytes arrived but 4194304 were announced"):
        writer.commit(4 * MIB)
    assert store.keys() == []


def read_until(child: subprocess.Popen[bytes], marker: bytes, seconds: float, stderr: Path) -> None:
    """Read the child's stdout until ``marker`` arrives. Past ``seconds``, or when the child ends
    first, fail with what it wrote and, when it still runs, its threads' stacks (faulthandler on
    SIGUSR1): a stuck writer fails the test saying where it was stuck instead of hanging it."""
    assert child.stdout is not None
    fd, seen = child.stdout.fileno(), b""
    deadline = time.monotonic() + seconds
    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        while marker not in seen:
            left = deadline - time.monotonic()
            chunk = os.read(fd, 65536) if left > 0 and selector.select(left) else None
            if not chunk:
                if chunk is None:  # still running: ask it for its stacks
                    child.send_signal(signal.SIGUSR1)
                    time.sleep(1)
                why = "in time" if chunk is None else f"before it ended (exit {child.wait()})"
                pytest.fail(
                    f"the writer child did not print {marker!r} {why}; its stdout ended with "
                    f"{seen[-2000:]!r}; its stderr:\n{stderr.read_text(errors='replace')[-12000:]}"
                )
            seen += chunk


@pytest.mark.slow  # a killed writer process
def test_sigkill_mid_stream_leaves_nothing(store: Store, tmp_path: Path) -> None:
    block = DEFAULT_BLOCK_SIZES[store.kind]
    # stdout is the child's protocol (PAUSED): not also every request the Azure SDK logs at INFO
    # (Airflow 2 logs them to stdout, from the upload threads, while the child prints).
    env = {**os.environ, **store.env, "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING"}
    stderr = tmp_path / "child.stderr"
    with stderr.open("wb") as err:
        child = subprocess.Popen(
            [
                *(sys.executable, "-m", "tests.storage.writer_child", *store.child_args("killed.pdf")),
                *("--size", str(8 * block), "--pause-after", str(2 * block + MIB)),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=err,
            env=env,
            cwd=ROOT,
            start_new_session=True,
        )
    try:
        # Two blocks handed to the store's client, nothing committed. A few seconds normally.
        read_until(child, b"PAUSED\n", 120, stderr)
        if store.kind in ("s3", "azure"):
            # Parts/blocks reach the server, uncommitted (Azure's are sent while the writer goes on).
            wait_until(lambda: store.pending_uploads() == 1, 20, message=store.pending_uploads)
    finally:
        os.killpg(child.pid, signal.SIGKILL)
        child.wait()
    assert child.returncode == -signal.SIGKILL
    assert store.keys() == []
    assert not store.path("killed.pdf").exists()


@pytest.mark.parametrize("store", ["s3", "gcs", "azure"], indirect=True)
def test_missing_bucket_is_an_error_and_nothing_is_created(store: Store) -> None:
    before = store.buckets()
    target = store.path("folder/doc.pdf", bucket="no-such-bucket-x1")
    word = "container" if store.kind == "azure" else "bucket"
    with pytest.raises(
        SmartFlowsDownloadError, match=rf"The {word} 'no-such-bucket-x1' of .* does not exist"
    ) as err:
        open_atomic(target)
    assert err.value.bucket == "no-such-bucket-x1"
    assert store.buckets() == before
    with pytest.raises(SmartFlowsDownloadError, match=r"never creates"):
        check_destination(target, "my_conn")


def test_missing_bucket_names_the_connection(store: Store) -> None:
    if store.kind == "file":
        pytest.skip("a local folder is created, it has no bucket")
    target = store.path("doc.pdf", bucket="no-such-bucket-x2")
    with pytest.raises(SmartFlowsDownloadError, match=r"through connection 'my_conn'"):
        check_destination(target, "my_conn")


def test_existing_object_without_overwrite_is_an_error_and_untouched(store: Store) -> None:
    write(store, "doc.pdf", b"precious")
    with pytest.raises(SmartFlowsDownloadError, match=r"doc.pdf: it already exists.*overwrite=True"):
        open_atomic(store.path("doc.pdf"))
    assert store.read("doc.pdf") == b"precious"
    assert store.keys() == ["doc.pdf"]


def test_overwrite_replaces_the_object(store: Store) -> None:
    write(store, "doc.pdf", b"old")
    data = b"".join(chunks(DEFAULT_BLOCK_SIZES[store.kind] + 5))
    writer = open_atomic(store.path("doc.pdf"), overwrite=True)
    for start in range(0, len(data), MIB):
        writer.write(data[start : start + MIB])
        assert store.read("doc.pdf") == b"old"  # the old object stays whole until the commit
    writer.commit(len(data))
    assert store.read("doc.pdf") == data
    assert store.keys() == ["doc.pdf"]


def test_object_appearing_during_the_write_is_kept(store: Store) -> None:
    if store.kind == "gcs":
        pytest.skip("the GCS emulator ignores ifGenerationMatch=0 (real GCS refuses the commit)")
    writer = open_atomic(store.path("doc.pdf"))
    writer.write(b"ours")
    write(store, "doc.pdf", b"theirs")
    with pytest.raises(SmartFlowsDownloadError, match=r"doc.pdf: it appeared during the write"):
        writer.commit(4)
    assert store.read("doc.pdf") == b"theirs"
    if store.kind == "s3":
        assert store.pending_uploads() == 0


def test_metadata_and_sha256_are_stored(store: Store) -> None:
    data = os.urandom(3 * MIB)
    metadata = {"smartflows_document_id": "doc-1", "smartflows_execution_id": "ex-9"}
    stored = write(store, "doc.pdf", data, metadata=metadata)
    if store.kind == "file":
        assert store.keys() == ["doc.pdf"]  # no sidecar: local files carry no metadata
        return
    found = store.metadata("doc.pdf")
    assert {k: found.get(k) for k in (*metadata, SHA256_KEY)} == {**metadata, SHA256_KEY: stored.sha256}


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"block_size": 0}, "block_size must be an integer >= 1"),
        ({"block_size": True}, "block_size must be an integer >= 1"),
        ({"metadata": {"bad-key": "x"}}, "Metadata key 'bad-key'"),
    ],
    ids=["zero-block", "bool-block", "metadata-key"],
)
def test_bad_arguments_write_nothing(store: Store, kwargs: dict, match: str) -> None:
    with pytest.raises(SmartFlowsInputError, match=match):
        open_atomic(store.path("doc.pdf"), **kwargs)
    assert store.keys() == []


@pytest.mark.parametrize("store", ["s3"], indirect=True)
def test_s3_block_size_below_the_part_minimum(store: Store) -> None:
    with pytest.raises(SmartFlowsInputError, match="at least 5 MiB"):
        open_atomic(store.path("doc.pdf"), block_size=MIB)


def test_a_committed_writer_refuses_more(store: Store) -> None:
    writer = open_atomic(store.path("doc.pdf"))
    writer.write(b"x")
    writer.commit(1)
    with pytest.raises(ValueError, match="already committed or aborted"):
        writer.write(b"y")
    writer.abort()  # no effect after the commit
    assert store.read("doc.pdf") == b"x"


@pytest.mark.slow  # 256 MiB write
def test_memory_of_a_256_mib_write_is_bounded(store: Store) -> None:
    """The write's own RSS (peak during it minus RSS before it), measured in a subprocess."""
    size = 256 * MIB
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.storage.writer_child",
            *store.child_args("big.bin"),
            "--size",
            str(size),
        ],
        capture_output=True,
        env={**os.environ, **store.env},
        cwd=ROOT,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr.decode()[-3000:]
    report = json.loads(result.stdout.decode().strip().splitlines()[-1])
    grown = report["rss_peak"] - report["rss_before"]
    print(f"{store.kind}: the write's own RSS {grown / MIB:.1f} MiB")
    assert report["size"] == size
    assert grown <= 32 * MIB, f"{store.kind}: {grown / MIB:.1f} MiB"
    assert store.keys() == ["big.bin"]

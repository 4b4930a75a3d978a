"""StreamDigest (the sha256 beside the reading thread) alone and inside the atomic writers: the
same digest as hashlib, small objects stay inline, and whatever happens no hashing thread is left."""

from __future__ import annotations

import gc
import hashlib
import os
import random
import threading
import uuid
from typing import TYPE_CHECKING, Any

import pytest

from airflow_provider_smartflows.digest import INLINE_BYTES, StreamDigest
from airflow_provider_smartflows.storage import open_atomic
from tests.storage.test_downloads import generate

if TYPE_CHECKING:
    from airflow_provider_smartflows.hooks.smartflows import SmartFlowsHook
    from tests.storage.stores import Store

MIB = 1 << 20


def hashing_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name.startswith("smartflows-sha256")]


def random_blocks(total: int, seed: int, largest: int = 3 * MIB) -> list[bytes]:
    rng = random.Random(seed)
    blocks, left = [], total
    while left:
        size = min(left, rng.choice([1, 7, 2048, 4095, 65536, rng.randrange(1, largest)]))
        blocks.append(rng.randbytes(size))
        left -= size
    return blocks


class FailingHasher:
    """A sha256 whose update fails once ``fail_after`` bytes were hashed (as a MemoryError would)."""

    def __init__(self, fail_after: int) -> None:
        self.sha = hashlib.sha256()
        self.left = fail_after

    def update(self, block: Any) -> None:
        self.left -= len(block)
        if self.left < 0:
            raise RuntimeError("the hash failed")
        self.sha.update(block)

    def hexdigest(self) -> str:
        return self.sha.hexdigest()


@pytest.mark.parametrize(
    ("inline_bytes", "queue_bytes"),
    [(0, 4096), (0, 4 * MIB), (INLINE_BYTES, 64 * 1024), (1 << 40, 4 * MIB)],
    ids=["threaded-in-1k-pieces", "threaded", "inline-then-threaded", "inline"],
)
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_digest_is_hashlibs_over_random_blocks(inline_bytes: int, queue_bytes: int, seed: int) -> None:
    blocks = random_blocks(12 * MIB + seed, seed)
    digest = StreamDigest(inline_bytes=inline_bytes, queue_bytes=queue_bytes)
    for block in blocks:
        digest.update(block)
    assert digest.hexdigest() == hashlib.sha256(b"".join(blocks)).hexdigest()
    assert digest.threaded == (inline_bytes < 12 * MIB)
    assert hashing_threads() == []


@pytest.mark.parametrize("kind", [bytearray, memoryview], ids=["bytearray", "memoryview"])
def test_a_reused_buffer_is_hashed_as_it_was_given(kind: type) -> None:
    """A mutable block is copied before it is queued: the caller may refill it at once."""
    buffer = bytearray(MIB)
    digest, expected = StreamDigest(inline_bytes=0), hashlib.sha256()
    for number in range(16):
        buffer[:] = bytes([number]) * MIB
        digest.update(kind(buffer))
        expected.update(buffer)
    assert digest.hexdigest() == expected.hexdigest()


def test_without_a_thread_everything_is_hashed_inline() -> None:
    blocks = random_blocks(3 * INLINE_BYTES, seed=9)
    digest = StreamDigest(use_thread=False)
    for block in blocks:
        digest.update(block)
        assert hashing_threads() == []
    assert not digest.threaded
    assert digest.hexdigest() == hashlib.sha256(b"".join(blocks)).hexdigest()


def test_a_small_document_starts_no_thread() -> None:
    digest = StreamDigest()
    for block in random_blocks(2_000_000, seed=4, largest=64 * 1024):
        digest.update(block)
        assert hashing_threads() == []
    assert not digest.threaded
    digest.hexdigest()


def test_a_failure_in_the_thread_surfaces_at_the_digest_and_ends_the_thread() -> None:
    digest = StreamDigest(inline_bytes=MIB, hasher=FailingHasher(fail_after=4 * MIB + 1))
    for _ in range(5):  # the last block fails, once the caller gave them all
        digest.update(os.urandom(MIB))
    with pytest.raises(RuntimeError, match="the hash failed"):
        digest.hexdigest()
    assert hashing_threads() == []


def test_a_failure_in_the_thread_stops_the_next_blocks() -> None:
    digest = StreamDigest(inline_bytes=0, queue_bytes=4 * 4096, hasher=FailingHasher(fail_after=0))
    digest.update(b"x" * 4096)

    def more_blocks() -> None:
        for _ in range(100):  # four blocks in flight at most: a later update sees the first fail
            digest.update(b"y" * 4096)

    with pytest.raises(RuntimeError, match="the hash failed"):
        more_blocks()
    assert hashing_threads() == []
    with pytest.raises(ValueError, match="takes no more bytes"):
        digest.update(b"z")


def test_close_mid_stream_ends_the_thread_and_refuses_the_digest() -> None:
    digest = StreamDigest(inline_bytes=0)
    for _ in range(8):
        digest.update(os.urandom(MIB))
    digest.close()
    digest.close()  # idempotent
    assert hashing_threads() == []
    with pytest.raises(ValueError, match="was closed"):
        digest.hexdigest()
    with pytest.raises(ValueError, match="takes no more bytes"):
        digest.update(b"more")


def test_a_dropped_digest_does_not_leave_its_thread_waiting() -> None:
    name = f"smartflows-sha256-{uuid.uuid4().hex}"
    digest = StreamDigest(inline_bytes=0, name=name)
    digest.update(os.urandom(MIB))
    (thread,) = [t for t in threading.enumerate() if t.name == name]
    del digest
    gc.collect()
    thread.join(timeout=30)
    assert not thread.is_alive()


# --------------------------------------------------------------------------- inside the writers


def test_a_big_write_in_random_blocks_has_hashlibs_sha256(store: Store) -> None:
    blocks = random_blocks(3 * INLINE_BYTES + 5, seed=7)
    with open_atomic(store.path("big.bin")) as writer:
        for block in blocks:
            writer.write(block)
        assert writer._digest.threaded == (
            store.kind == "file"
        )  # local files: the hash left the writing thread
        stored = writer.commit(sum(map(len, blocks)))
    data = b"".join(blocks)
    assert stored.sha256 == hashlib.sha256(data).hexdigest()
    assert store.read("big.bin") == data
    assert hashing_threads() == []


def test_an_exception_mid_stream_leaves_no_thread_and_nothing_visible(store: Store) -> None:
    target = store.path("doc.pdf")

    def write_then_fail() -> None:
        with open_atomic(target) as writer:
            for _ in range(2 * INLINE_BYTES // MIB):
                writer.write(os.urandom(MIB))
            assert (hashing_threads() != []) == (store.kind == "file")
            raise ConnectionResetError("the source went away")

    with pytest.raises(ConnectionResetError, match="the source went away"):
        write_then_fail()
    assert hashing_threads() == []
    assert store.keys() == []
    assert not target.exists()


@pytest.mark.parametrize("store", ["file"], indirect=True)
def test_commit_after_abort_mid_stream_is_refused(store: Store) -> None:
    writer = open_atomic(store.path("doc.pdf"))
    for _ in range(2 * INLINE_BYTES // MIB):
        writer.write(os.urandom(MIB))
    writer.abort()
    assert hashing_threads() == []
    with pytest.raises(ValueError, match="already committed or aborted"):
        writer.commit()
    assert store.keys() == []


@pytest.mark.parametrize("store", ["file"], indirect=True)
def test_a_failed_hash_aborts_the_commit(store: Store) -> None:
    writer = open_atomic(store.path("doc.pdf"))
    # The one way to make sha256 fail on demand: a hasher that does (a MemoryError, in real life).
    writer._digest = StreamDigest(inline_bytes=0, hasher=FailingHasher(fail_after=2 * MIB + 1))
    for _ in range(3):  # the last block fails, in the thread, after the last write
        writer.write(os.urandom(MIB))
    with pytest.raises(RuntimeError, match="the hash failed"):
        writer.commit(3 * MIB)
    assert hashing_threads() == []
    assert store.keys() == []


@pytest.mark.parametrize("store", ["file"], indirect=True)
def test_a_big_download_is_verified_and_leaves_no_thread(
    store: Store, smartflows_emulator: Any, hook: SmartFlowsHook
) -> None:
    size = 3 * INLINE_BYTES + 12345
    _, (document_id,) = generate(smartflows_emulator, hook, {"displayName": "Big", "size": size})
    done = hook.download_document(document_id, store.uri("big.pdf"))
    assert (done.size, done.sha256) == (size, smartflows_emulator.document_sha256(document_id))
    assert hashlib.sha256(store.read("big.pdf")).hexdigest() == done.sha256
    assert hashing_threads() == []

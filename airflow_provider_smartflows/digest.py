"""The sha256 of a byte stream, computed beside the thread that reads and writes it.

Inline, sha256 costs a download about as much CPU as receiving and writing the bytes together.
``hashlib`` releases the GIL while it hashes a buffer of 2 KiB or more, so a thread of its own
hashes a big document on the other core while the caller receives and writes the next blocks.
:class:`StreamDigest` hashes the first :data:`INLINE_BYTES` in the caller's thread (a small
document never starts a thread), then hands copies of the blocks, in order, to its thread in
:data:`BUFFERS` buffers of its own (the caller waits when the hash falls behind: memory stays
bounded by :data:`QUEUE_BYTES`).
:meth:`StreamDigest.hexdigest` waits for the thread and raises what failed in it;
:meth:`StreamDigest.close` drops what is queued. Either way the thread has ended when they return.
"""

from __future__ import annotations

import hashlib
import queue
import threading
import weakref
from typing import Any

MIB = 1 << 20

#: Bytes hashed in the caller's thread before a thread takes over (small documents stay inline).
INLINE_BYTES = 4 * MIB

#: Bytes queued for the hashing thread at most: :data:`BUFFERS` buffers, a block longer than one
#: is queued in pieces.
QUEUE_BYTES = 4 * MIB
BUFFERS = 4


class _HashThread:
    """Hashes the queued blocks in order until it takes ``None``; a failure is kept in :attr:`error`.

    Each block is copied into one of the thread's ``buffers`` (taken free, given back once hashed,
    so the caller waits when all are queued): the caller's block is released at once (a block held
    for the thread would make the reading thread's every allocation fresh memory, page faults
    included, which costs more than the copy).
    """

    def __init__(self, hasher: Any, buffer_size: int, name: str) -> None:
        self.hasher = hasher
        self.buffer_size = buffer_size
        self.error: BaseException | None = None
        self._dropping = False
        self._free: queue.SimpleQueue[bytearray] = queue.SimpleQueue()
        for _ in range(BUFFERS):
            self._free.put(bytearray())  # allocated when first used: a short stream needs fewer
        self._blocks: queue.SimpleQueue[memoryview | None] = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.thread.start()

    def put(self, block: bytes | bytearray | memoryview) -> None:
        """Queue a copy of ``block``, in pieces of at most one buffer (waits for a free buffer)."""
        data = memoryview(block).cast("B")
        for start in range(0, len(data), self.buffer_size):
            piece = data[start : start + self.buffer_size]
            buffer = self._free.get() or bytearray(self.buffer_size)
            view = memoryview(buffer)[: len(piece)]
            view[:] = piece
            self._blocks.put(view)

    def stop(self, *, drop: bool) -> None:
        """Let the thread end after the queued blocks (or at once with ``drop``) and wait for it."""
        self._dropping = self._dropping or drop
        self._blocks.put(None)
        self.thread.join()

    def _run(self) -> None:
        while (view := self._blocks.get()) is not None:
            if self.error is None and not self._dropping:
                try:
                    self.hasher.update(view)
                except BaseException as err:  # raised in the caller's thread by StreamDigest
                    self.error = err
            self._free.put(view.obj)  # type: ignore[arg-type]


class StreamDigest:
    """
    The sha256 (or ``hasher``'s digest) of the blocks given to :meth:`update`, in their order.

    Blocks after the first ``inline_bytes`` are copied for a thread of the digest's own, which
    hashes them: the caller may reuse its buffer as soon as :meth:`update` returns.

    :param use_thread: hash past ``inline_bytes`` on a thread (False: everything inline).
    :param inline_bytes: bytes hashed in the caller's thread before the thread starts.
    :param queue_bytes: bytes queued for the thread at most.
    :param hasher: the hash object (default: a new ``hashlib.sha256()``).
    :param name: the thread's name.
    """

    def __init__(
        self,
        *,
        use_thread: bool = True,
        inline_bytes: int = INLINE_BYTES,
        queue_bytes: int = QUEUE_BYTES,
        hasher: Any = None,
        name: str = "smartflows-sha256",
    ) -> None:
        self._hasher = hashlib.sha256() if hasher is None else hasher
        self._use_thread = use_thread
        self._inline_left = inline_bytes
        self._queue_bytes = queue_bytes
        self._name = name
        self._thread: _HashThread | None = None
        self._finished = False
        self._closed = False
        self.threaded = False  #: whether a thread took over the hashing

    def update(self, block: bytes | bytearray | memoryview) -> None:
        """Add ``block`` (hashed now, or queued for the thread); raises what failed in the thread."""
        if self._finished:
            raise ValueError("The digest is finished: it takes no more bytes.")
        if self._thread is None and (self._inline_left > 0 or not self._use_thread):
            self._hasher.update(block)
            self._inline_left -= len(block)
            return
        thread = self._thread or self._start()
        if thread.error is not None:
            self.close()
            raise thread.error
        thread.put(block)

    def hexdigest(self) -> str:
        """The digest of every block, once the thread hashed them all; no more blocks after it."""
        if self._closed:
            raise ValueError("The digest was closed: some blocks were dropped, it has no value.")
        thread, self._thread, self._finished = self._thread, None, True
        if thread is not None:
            thread.stop(drop=False)
            if thread.error is not None:
                raise thread.error
        return str(self._hasher.hexdigest())

    def close(self) -> None:
        """Drop the blocks still queued and end the thread (idempotent); no more blocks after it."""
        thread, self._thread, self._finished, self._closed = self._thread, None, True, True
        if thread is not None:
            thread.stop(drop=True)

    def _start(self) -> _HashThread:
        self._thread = thread = _HashThread(self._hasher, max(1, self._queue_bytes // BUFFERS), self._name)
        self.threaded = True
        # A digest dropped without hexdigest() or close() does not leave its thread waiting forever.
        weakref.finalize(self, _HashThread.stop, thread, drop=True).atexit = False
        return thread

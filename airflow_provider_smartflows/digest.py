"""The sha256 of a byte stream, computed beside the thread that reads and writes it.

Inline, sha256 costs a download about as much CPU as receiving and writing the bytes together.
``hashlib`` releases the GIL while it hashes a buffer of 2 KiB or more, so a thread of its own
hashes a big document on the other core while the caller receives and writes the next blocks.
:class:`StreamDigest` hashes the first :data:`INLINE_BYTES` in the caller's thread (a small
document never starts a thread), then hands the blocks, in order, to its thread through a queue
bounded by :data:`QUEUE_BYTES` (the caller waits when the hash falls behind: memory stays bounded).
:meth:`StreamDigest.hexdigest` waits for the thread and raises what failed in it;
:meth:`StreamDigest.close` drops what is queued. Either way the thread has ended when they return.
"""

from __future__ import annotations

import collections
import hashlib
import threading
import weakref
from typing import Any

MIB = 1 << 20

#: Bytes hashed in the caller's thread before a thread takes over (small documents stay inline).
INLINE_BYTES = 4 * MIB

#: Bytes queued for the hashing thread at most (one block is always admitted, whatever its size).
QUEUE_BYTES = 4 * MIB


class _HashThread:
    """Hashes the queued blocks in order until it takes ``None``; a failure is kept in :attr:`error`.

    Each block is copied into a buffer of the thread's own, reused once hashed: the caller's block
    is released at once (a fresh block held for the thread would make every allocation of the
    reading thread fresh memory, page faults included, which costs more than the copy).
    """

    def __init__(self, hasher: Any, limit: int, name: str) -> None:
        self.hasher = hasher
        self.limit = limit
        self.error: BaseException | None = None
        self._dropping = False
        self._blocks: collections.deque[memoryview | None] = collections.deque()
        self._spare: list[bytearray] = []  # buffers hashed, ready for the next blocks
        self._queued = 0  # bytes queued or being hashed
        self._changed = threading.Condition()
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.thread.start()

    def put(self, block: bytes | bytearray | memoryview) -> None:
        size = len(block)
        with self._changed:
            while self._queued and self._queued + size > self.limit:
                self._changed.wait()
            buffer = self._spare.pop() if self._spare and len(self._spare[-1]) >= size else bytearray(size)
            view = memoryview(buffer)[:size]
            view[:] = block
            self._blocks.append(view)
            self._queued += size
            self._changed.notify_all()

    def stop(self, *, drop: bool) -> None:
        """Let the thread end after the queued blocks (or at once with ``drop``) and wait for it."""
        with self._changed:
            self._dropping = self._dropping or drop
            self._blocks.append(None)
            self._changed.notify_all()
        self.thread.join()
        self._spare.clear()

    def _run(self) -> None:
        while True:
            with self._changed:
                while not self._blocks:
                    self._changed.wait()
                view = self._blocks[0]  # counted in _queued until hashed
            if view is None:
                return
            if self.error is None and not self._dropping:
                try:
                    self.hasher.update(view)
                except BaseException as err:  # raised in the caller's thread by StreamDigest
                    self.error = err
            with self._changed:
                self._blocks.popleft()
                self._queued -= len(view)
                if len(self._spare) < 4:
                    self._spare.append(view.obj)  # type: ignore[arg-type]
                self._changed.notify_all()


class StreamDigest:
    """
    The sha256 (or ``hasher``'s digest) of the blocks given to :meth:`update`, in their order.

    Blocks after the first ``inline_bytes`` are hashed by a thread of the digest's own: a
    ``bytes`` block is queued as it is (it cannot change), any other buffer is copied first, so
    the caller may reuse it as soon as :meth:`update` returns.

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
        self._thread = thread = _HashThread(self._hasher, self._queue_bytes, self._name)
        self.threaded = True
        # A digest dropped without hexdigest() or close() does not leave its thread waiting forever.
        weakref.finalize(self, _HashThread.stop, thread, drop=True).atexit = False
        return thread

"""Writing a local file so that its one ``fsync`` at the commit is short.

The kernel keeps written pages dirty until its own write-back starts (seconds later, or when a
tenth of the memory is dirty), so an ``fsync`` after a 1 GiB write waited for the whole gigabyte
(0.4 s on the benchmark machine, a third of the download). :class:`WriteBehind` asks the kernel to
start writing each :data:`WINDOW` as soon as it is written (``posix_fadvise(POSIX_FADV_DONTNEED)``
starts the write-back of the range and drops its pages once they are clean, so a big download does
not fill the page cache either): the disk works while the next bytes arrive, and the ``fsync`` waits
for the last window only. Where ``posix_fadvise`` is missing, the file is written all the same.
"""

from __future__ import annotations

import contextlib
import os

#: Bytes written between two write-back starts (documents under it never ask for one).
WINDOW = 8 << 20


class WriteBehind:
    """Writes every byte given to :meth:`write` to ``fd`` and starts the write-back behind them.

    :param fd: a file descriptor open for writing, at offset 0.
    :param window: bytes written between two write-back starts.
    """

    def __init__(self, fd: int, window: int = WINDOW) -> None:
        self.fd = fd
        self.window = window
        self.written = 0
        self._started_to = 0  # the write-back was started for the bytes before this offset

    def write(self, block: bytes | bytearray | memoryview) -> None:
        """Write all of ``block`` (a short write continues where it stopped)."""
        view = memoryview(block).cast("B")
        self.written += len(view)
        while view:
            view = view[os.write(self.fd, view) :]
        start, end = self._started_to, self.written
        if end - start >= self.window and hasattr(os, "posix_fadvise"):
            with contextlib.suppress(OSError):  # only a hint: a file that refuses it is written all the same
                os.posix_fadvise(self.fd, start, end - start, os.POSIX_FADV_DONTNEED)
            self._started_to = end

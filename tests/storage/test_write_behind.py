"""WriteBehind on real files: every byte lands in order, whatever the blocks and the window."""

from __future__ import annotations

import os
import random
from typing import TYPE_CHECKING

import pytest

from airflow_provider_smartflows.write_behind import WriteBehind

if TYPE_CHECKING:
    from pathlib import Path

MIB = 1 << 20


@pytest.mark.parametrize(
    "window", [1, 64 * 1024, 8 * MIB, 1 << 40], ids=["every-write", "64k", "8m", "never"]
)
def test_every_block_lands_in_order(tmp_path: Path, window: int) -> None:
    rng = random.Random(window)
    blocks = [rng.randbytes(rng.choice([1, 4095, 65536, rng.randrange(1, 3 * MIB)])) for _ in range(40)]
    path = tmp_path / "out.bin"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    try:
        behind = WriteBehind(fd, window)
        for number, block in enumerate(blocks):
            behind.write(block if number % 3 else memoryview(bytearray(block)))
        os.fsync(fd)
    finally:
        os.close(fd)
    assert behind.written == sum(map(len, blocks))
    assert path.read_bytes() == b"".join(blocks)


def test_a_descriptor_that_refuses_the_hint_is_written_all_the_same() -> None:
    """posix_fadvise fails on a pipe (ESPIPE): the hint is dropped, the bytes still go through."""
    read_end, write_end = os.pipe()
    try:
        behind = WriteBehind(write_end, window=1)
        behind.write(b"abc")
        behind.write(memoryview(b"defg"))
        assert os.read(read_end, 100) == b"abcdefg"
    finally:
        os.close(read_end)
        os.close(write_end)

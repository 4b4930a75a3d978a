"""Where the checkout is, what constraints.txt pins, and the test venv's tools."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CONSTRAINTS = ROOT / "constraints.txt"
BIN = Path(sys.executable).parent


def pinned(name: str) -> str:
    """The version `constraints.txt` pins for ``name``."""
    for line in CONSTRAINTS.read_text().splitlines():
        if line.lower().startswith(f"{name.lower()}=="):
            return line.split("==", 1)[1].strip()
    raise LookupError(f"{name} is not pinned in {CONSTRAINTS}")


def tool(name: str) -> Path:
    """A console script of the test venv; missing means the venv lacks the dev extra."""
    path = BIN / name
    assert path.exists(), f"{path} is missing: it comes with the dev extra (make install)"
    return path


@dataclass(frozen=True)
class Distributions:
    sdist: Path
    wheel: Path
    build_seconds: float

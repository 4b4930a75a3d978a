"""Helpers of the reliability suite: quick flows, bounded waits, the figures file."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

#: Figures of the last run, for RELIABILITY.md (gitignored).
LAST_RUN = Path(__file__).resolve().parent / ".last_run.json"


def record_figures(section: str, figures: dict[str, Any]) -> None:
    """Merge one test's measured figures into ``.last_run.json`` under ``section``."""
    try:
        data = json.loads(LAST_RUN.read_text())
    except (OSError, ValueError):
        data = {}
    data[section] = {"recorded_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **figures}
    LAST_RUN.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def quick_flow(flow_id: str, **extra: Any) -> dict[str, Any]:
    """A flow that succeeds almost at once with one small PDF."""
    flow: dict[str, Any] = {
        "id": flow_id,
        "steps": [{"message": "Generating", "percentage": 50, "seconds": 0.05}],
        "documents": [{"displayName": f"Doc {flow_id}"}],
    }
    flow.update(extra)
    return flow


def files_under(root: Path) -> list[str]:
    """Every file below a folder (relative paths, sorted), hidden temporary files included."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())

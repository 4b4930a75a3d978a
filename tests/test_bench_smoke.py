"""`make bench-smoke` runs every benchmark with tiny sizes, so the benchmark code cannot rot.

Timings are not checked here (they belong in benchmarks/RESULTS.md); only that each benchmark
produced its figures and its chart.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

# slow, serial: the benchmark smoke (make bench-smoke) starts real Airflow services
pytestmark = [pytest.mark.slow, pytest.mark.serial]

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.timeout(900)
def test_bench_smoke_produces_figures_for_every_benchmark(tmp_path: Path) -> None:
    make = shutil.which("make")
    assert make is not None, "make is needed to run the benchmark smoke mode"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    done = subprocess.run(
        [make, "-C", str(ROOT), "bench-smoke", f"BENCH_SMOKE_OUT={tmp_path}"],
        env=env,
        capture_output=True,
        text=True,
        timeout=850,
        start_new_session=True,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]

    results = json.loads((tmp_path / "results.json").read_text())["results"]
    # A benchmark that failed is recorded with its message and the others still ran: show it.
    failed = {part: value["failed"] for part, value in results.items() if "failed" in value}
    assert not failed, failed
    b1 = results["b1"]["table"]
    assert b1, "B1 produced no rows"
    for row in b1.values():
        assert row["failures"]["median"] == 0
        assert row["requests"]["median"] > 0
        assert row["cpu_seconds"]["median"] > 0
    b2 = results["b2"]
    if "table" in b2:
        assert b2["table"]["deferrable"]["median"] > 0
        assert b2["table"]["poking"]["median"] > 0
    else:
        assert b2["dag_check"].startswith("parsed")
    b3 = results["b3"]["table"]
    assert {tuple(key.split("/")[1:]) for key in b3} >= {("file", "ours"), ("s3", "ours")}
    assert all(row["verified"] for row in b3.values())
    b4 = results["b4"]
    assert b4["batch"]["records"] == b4["records"]
    assert b4["batch"]["executions"] == b4["records"]
    assert b4["mapped"]["state"] == "success"
    assert b4["ideal_seconds"] > 0
    b5 = results["b5"]["rows"]
    assert {(row["store"], row["how"]) for row in b5} >= {
        ("file", "ours"),
        ("s3", "ours"),
        ("s3", "reference"),
    }
    assert all(row["verified"] and row["docs_per_s"] > 0 for row in b5)
    b6 = results["b6"]
    if os.environ.get("BENCH_SMOKE_B6") == "1":
        for phase in ("burst_result", "latency"):
            assert (b6[phase]["duplicates"], b6[phase]["missed"]) == (0, 0), b6[phase]
        assert b6["requests"]["one_watcher"]["listing_requests"] > 0
    else:
        assert b6["dag_check"].startswith("parsed"), b6
    assert results["profile"]["cprofile"]["by_own"]

    report = (tmp_path / "RESULTS.md").read_text()
    for heading in ("## B1", "## B2", "## B3", "## B4", "## B5", "## B6", "## Profile"):
        assert heading in report
    charts = ("b1_triggerer_fleet.png", "b2_worker_slots.png", "b3_file.png", "b3_s3.png", "b4_batch.png")
    for chart in (*charts, "profile_trigger.png"):
        assert (tmp_path / chart).read_bytes().startswith(b"\x89PNG"), chart

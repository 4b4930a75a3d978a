"""B2: worker slots. N executions of S seconds, deferrable vs ``deferrable=False``, real Airflow.

Scheduler, triggerer, dag-processor and api-server come from the system test's
``tests/system/stack.py`` (``AirflowStack``, ``EmulatorProcess``: LocalExecutor, parallelism 2,
SQLite, each service in its own process group, stopped by PID); reused as is, not copied.
Wall time = from the moment the DAG run is triggered (REST call) to the ``end_date`` of the last
successful task instance, as recorded by Airflow.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from benchmarks.common import ROOT, log, summary

DAGS = Path(__file__).parent / "b2_dags"


def _ts(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def one_run(stack: Any, dag_id: str, count: int, seconds: float) -> dict[str, Any]:
    started = time.time()
    run_id = stack.trigger(dag_id)
    deadline = time.monotonic() + max(600, count * seconds * 2 + 300)
    state = "queued"
    while time.monotonic() < deadline:
        state = stack.dag_run_state(dag_id, run_id)
        if state in ("success", "failed"):
            break
        time.sleep(1)
    tis = stack.task_instances(dag_id, run_id)
    ok = [ti for ti in tis if ti["state"] == "success" and ti.get("end_date")]
    if state != "success" or len(ok) != count:
        states = sorted(str(ti["state"]) for ti in tis)
        return {"dag_id": dag_id, "run_id": run_id, "failed": f"DAG run {state}, task states {states}"}
    last = max(_ts(ti["end_date"]) for ti in ok)
    return {"dag_id": dag_id, "run_id": run_id, "wall_seconds": last - started, "tasks": len(ok)}


def run(count: int, seconds: float, repeats: dict[str, int], work: Path) -> dict[str, Any]:
    from tests.support.airflow_stack import AirflowStack, EmulatorProcess

    work.mkdir(parents=True, exist_ok=True)
    scen = work / "b2-scenario.json"
    scen.write_text(
        json.dumps(
            {
                "flows": [
                    {
                        "id": "bench-b2",
                        "displayName": "B2 bench flow",
                        "input": "any",
                        "steps": [{"message": "Rendering", "percentage": 50, "seconds": seconds}],
                        "final_status": "Success",
                        "documents": [
                            {"displayName": "B2 {record}", "contentType": "application/pdf", "size": None}
                        ],
                        "documents_per_record": True,
                    }
                ]
            }
        )
    )
    emulator = EmulatorProcess(work, scenario=scen, speedup=1.0)
    raw: list[dict[str, Any]] = []
    failures: list[dict[str, Any]] = []
    try:
        connection = {"conn_type": "smartflows", "host": emulator.base_url, "password": emulator.api_key}
        home = work / "airflow-home"
        home.mkdir()
        stack = AirflowStack(
            home,
            DAGS,
            {
                "AIRFLOW_CONN_SMARTFLOWS_DEFAULT": json.dumps(connection),
                "BENCH_B2_COUNT": str(count),
                "PYTHONPATH": str(ROOT),
            },
            extra_logs=[emulator.log_path],
        )
        try:
            log("B2: starting Airflow services (db migrate, scheduler, triggerer, dag-processor, api-server)")
            stack.start_all()
            for dag_id in ("bench_slots_deferrable", "bench_slots_poking"):
                stack.wait_for_dag(dag_id, timeout=180)
            for mode in ("deferrable", "poking"):
                good, attempts = 0, 0
                # A failed DAG run is recorded and reported, and replaced by one more run at most.
                while good < repeats[mode] and attempts < repeats[mode] + 1:
                    attempts += 1
                    log(
                        f"B2 {mode} run {attempts} (want {repeats[mode]}): {count} executions of {seconds:g} s"
                    )
                    res = one_run(stack, f"bench_slots_{mode}", count, seconds)
                    res["mode"] = mode
                    if "failed" in res:
                        log(f"   FAILED: {res['failed']}")
                        failures.append(res)
                        (work / f"failed-{res['run_id'][-12:]}.log").write_text(stack.dump())
                    else:
                        good += 1
                        log(f"   wall {res['wall_seconds']:.1f} s")
                        raw.append(res)
        finally:
            stack.stop_all()
    finally:
        emulator.stop()
    table = {
        mode: summary([r["wall_seconds"] for r in raw if r["mode"] == mode])
        for mode in ("deferrable", "poking")
    }
    return {
        "count": count,
        "seconds": seconds,
        "parallelism": 2,
        "repeats": repeats,
        "table": table,
        "raw": raw,
        "failed_runs": failures,
    }


def main(argv: list[str]) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--count", type=int, default=20)
    p.add_argument("--seconds", type=float, default=30)
    p.add_argument("--deferrable-runs", type=int, default=3)
    p.add_argument("--poking-runs", type=int, default=1)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    repeats = {"deferrable": args.deferrable_runs, "poking": args.poking_runs}
    with tempfile.TemporaryDirectory(prefix="bench-b2-") as tmp:
        result = run(args.count, args.seconds, repeats, Path(tmp))
    text = json.dumps(result, indent=1)
    if args.out:
        args.out.write_text(text)
    else:
        print(text)


if __name__ == "__main__":
    main(sys.argv[1:])

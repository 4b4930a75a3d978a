"""B4: a batch of N records from one task, against the same records mapped over the run operator.

Real services of ``tests/system/stack.py`` (scheduler, triggerer, dag-processor, api-server;
LocalExecutor with parallelism 4, SQLite), the emulator in its own process with a flow whose
executions last 5-15 emulated seconds (evenly spread, ``"seconds": [5, 15]``), at a speed-up.

- **Batch** (``bench_b4_batch``): ``SmartFlowsRunFlowBatchOperator`` over a JSON Lines file of N
  records, ``max_active`` at once, deferrable, each record's document to ``file://``, a manifest.
- **Mapped** (``bench_b4_mapped``): ``SmartFlowsRunFlowOperator`` (deferrable) mapped over M records
  (``max_active_tasks`` = ``max_active``), without downloads; M may be smaller than N, and its
  wall time for N records is then estimated from what each record cost (see ``_mapped_estimate``).

Measured per run: wall time (trigger to the DAG run's end, as Airflow recorded it); the ideal
(N x mean execution duration / ``max_active`` / speed-up, the durations as the emulator planned
them); worker-slot time (task instances in state ``running``, sampled from the metadata DB every
0.25 s) and the batch's own in-task seconds (its checkpoint); the triggerer's CPU seconds (its
process tree, /proc); the metadata DB's growth (SQLite pages in use, before and after). Every run is
checked: N manifest lines, all ``succeeded``, one execution per record on the emulator, each
document on disk.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

from benchmarks.common import ROOT, loadavg, log, replace_section
from tests.support.airflow_stack import read_metadata_db as _query

DAGS = Path(__file__).parent / "b4_dags"
FLOW = "bench-b4"
TARGET_IDEAL_RATIO = 1.2
TARGET_SPEEDUP = 5.0
TARGET_DB_MIB = 1.0
PARALLELISM = 4
SECONDS = (5.0, 15.0)


def scenario() -> dict[str, Any]:
    return {
        "flows": [
            {
                "id": FLOW,
                "displayName": "B4 bench flow",
                "input": "any",
                "steps": [{"message": "Generating document", "percentage": 50, "seconds": list(SECONDS)}],
                "final_status": "Success",
                "documents": [{"displayName": "Invoice {record}", "contentType": "application/pdf"}],
                "documents_per_record": True,
            }
        ]
    }


# --- what is measured ----------------------------------------------------------------------------


def _ts(value: str | None) -> float:
    if not value:
        return float("nan")
    return datetime.fromisoformat(str(value).replace("Z", "+00:00").replace(" ", "T")).timestamp()


def db_bytes_in_use(db: Path) -> int:
    """Bytes of the SQLite pages in use (free pages, reused later, not counted)."""
    ((pages,),) = _query(db, "PRAGMA page_count")
    ((free,),) = _query(db, "PRAGMA freelist_count")
    ((size,),) = _query(db, "PRAGMA page_size")
    return int((pages - free) * size)


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds of ``pid`` and its living descendants, and of the children they reaped."""
    from tests.support.airflow_stack import descendants

    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for one in [pid, *descendants(pid)]:
        try:
            fields = Path(f"/proc/{one}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += sum(int(v) for v in fields[11:15]) / ticks  # utime stime cutime cstime
    return total


def ti_states(db: Path, dag_id: str, run_id: str) -> dict[str, int]:
    """How many task instances of the run are in each state."""
    rows = _query(
        db,
        "SELECT state, COUNT(*) FROM task_instance WHERE dag_id = ? AND run_id = ? GROUP BY state",
        (dag_id, run_id),
    )
    return {str(state): int(count) for state, count in rows}


class SlotSampler(threading.Thread):
    """Samples the run's task instances: seconds in ``running`` (worker slots held), peak deferred."""

    def __init__(self, db: Path, dag_id: str, run_id: str, interval: float = 0.25) -> None:
        super().__init__(daemon=True)
        self.db, self.dag_id, self.run_id, self.interval = db, dag_id, run_id, interval
        self.running_seconds = 0.0
        self.peak_running = 0
        self.peak_deferred = 0
        self.samples = 0
        self._halt = threading.Event()

    def run(self) -> None:
        last = time.monotonic()
        while not self._halt.is_set():
            states = ti_states(self.db, self.dag_id, self.run_id)
            now = time.monotonic()
            running = states.get("running", 0)
            self.running_seconds += running * (now - last)
            self.peak_running = max(self.peak_running, running)
            self.peak_deferred = max(self.peak_deferred, states.get("deferred", 0))
            self.samples += 1
            last = now
            self._halt.wait(self.interval)

    def stop(self) -> None:
        self._halt.set()
        self.join()


def one_run(stack: Any, dag_id: str, conf: dict[str, Any], timeout: float) -> dict[str, Any]:
    """Trigger ``dag_id``, sample it until it ends; wall time, slots, triggerer CPU, DB growth."""
    db = stack.home / "airflow.db"
    triggerer = stack.procs["triggerer"].pid
    db_before, cpu_before = db_bytes_in_use(db), tree_cpu_seconds(triggerer)
    started = time.time()
    run_id = stack.trigger(dag_id, conf)
    sampler = SlotSampler(db, dag_id, run_id)
    sampler.start()
    try:
        stack.wait_for(
            lambda: stack.dag_run_state(dag_id, run_id) in ("success", "failed"),
            timeout=timeout,
            interval=1.0,
            what=f"{dag_id} run {run_id} to end",
        )
    finally:
        sampler.stop()
    ((state, end_date),) = _query(
        db, "SELECT state, end_date FROM dag_run WHERE dag_id = ? AND run_id = ?", (dag_id, run_id)
    )
    return {
        "dag_id": dag_id,
        "run_id": run_id,
        "state": state,
        "task_states": ti_states(db, dag_id, run_id),
        "wall_seconds": _ts(end_date) - started,
        "slot_seconds": sampler.running_seconds,
        "peak_running": sampler.peak_running,
        "peak_deferred": sampler.peak_deferred,
        "samples": sampler.samples,
        "triggerer_cpu_seconds": tree_cpu_seconds(triggerer) - cpu_before,
        "db_growth_bytes": db_bytes_in_use(db) - db_before,
    }


# --- the runs ------------------------------------------------------------------------------------


def _check_batch(emulator: Any, work: Path, count: int) -> dict[str, Any]:
    """N manifest lines, all succeeded, one execution per record, each ``file://`` document on disk."""
    lines = [json.loads(line) for line in (work / "manifest.jsonl").read_text().splitlines() if line]
    keys = {line["key"] for line in lines}
    bad = [line for line in lines if line["status"] != "succeeded"]
    executions = [e for e in emulator.executions(FLOW) if e["input_data"]["id"][0] in keys]
    per_record = Counter(execution["input_data"]["id"][0] for execution in executions)
    missing = [
        line["key"]
        for line in lines
        for doc in line["documents"]
        if doc["uri"].startswith("file://") and not Path(doc["uri"].removeprefix("file://")).is_file()
    ]
    problems = []
    if len(lines) != count or len(keys) != count:
        problems.append(f"{len(lines)} manifest lines, {len(keys)} keys, for {count} records")
    if bad:
        problems.append(f"{len(bad)} records not succeeded, e.g. {bad[0]}")
    if sorted(per_record.values()) != [1] * count:
        problems.append(
            f"executions per record: {sorted(set(per_record.values()))} over {len(per_record)} records"
        )
    if missing:
        problems.append(f"{len(missing)} documents missing on disk, e.g. record {missing[0]}")
    if problems:
        raise RuntimeError("B4 batch run is wrong: " + "; ".join(problems))
    durations = [e["duration"] for e in executions]
    return {"executions": len(executions), "mean_duration": sum(durations) / len(durations)}


def checked_batch_run(
    stack: Any, emulator: Any, work: Path, conf: dict[str, Any], count: int, timeout: float
) -> dict[str, Any]:
    """One run of ``bench_b4_batch`` with ``conf`` (manifest under ``work``), checked by
    :func:`_check_batch`, with its checkpoint's in-task seconds and resumes."""
    batch = one_run(stack, "bench_b4_batch", conf, timeout=timeout)
    if batch["state"] != "success":
        raise RuntimeError(f"B4 batch run {batch['state']}: {batch['task_states']}\n{stack.dump()}")
    checkpoint = json.loads((work / "manifest.jsonl.checkpoint.json").read_text())
    batch.update(_check_batch(emulator, work, count), records=count)
    batch.update(task_seconds=checkpoint["worker_seconds"], resumes=checkpoint["resumes"])
    return batch


def _mapped_estimate(
    mapped: dict[str, Any], count: int, max_active: int, mean: float, speedup: float
) -> float:
    """Wall time of ``count`` mapped records, from M measured: each record holds a worker slot for
    ``slot_seconds / M`` (start, then resume) and PARALLELISM slots run at once; the executions
    themselves need at least ``count x mean / max_active``."""
    per_record = mapped["slot_seconds"] / mapped["records"]
    return max(count * per_record / PARALLELISM, count * mean / max_active / speedup)


def run(count: int, mapped_count: int, max_active: int, speedup: float, work: Path) -> dict[str, Any]:
    from tests.support.airflow_stack import AirflowStack, EmulatorProcess

    work.mkdir(parents=True, exist_ok=True)
    loads = {"start": loadavg()}
    (work / "scenario.json").write_text(json.dumps(scenario()))
    records = work / "records.jsonl"
    records.write_text(
        "".join(json.dumps({"id": f"r{i:05d}", "customer": f"Customer {i}"}) + "\n" for i in range(count))
    )
    emulator = EmulatorProcess(
        work / "emulator", scenario=work / "scenario.json", speedup=speedup, quiet=True
    )
    try:
        connection = {"conn_type": "smartflows", "host": emulator.base_url, "password": emulator.api_key}
        stack = AirflowStack(
            work / "airflow-home",
            DAGS,
            {
                "AIRFLOW_CONN_SMARTFLOWS_DEFAULT": json.dumps(connection),
                "AIRFLOW__CORE__PARALLELISM": str(PARALLELISM),
                "AIRFLOW__CORE__MAX_MAP_LENGTH": str(max(1024, mapped_count)),
                "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG": str(max_active),
                "AIRFLOW__TRIGGERER__CAPACITY": str(max(1000, max_active)),
                "BENCH_B4_MAX_ACTIVE": str(max_active),
                "PYTHONPATH": str(ROOT),
            },
            extra_logs=[emulator.log_path],
        )
        (work / "airflow-home").mkdir(exist_ok=True)
        try:
            log("B4: starting Airflow services (db migrate, scheduler, triggerer, dag-processor, api-server)")
            stack.start_all()
            for dag_id in ("bench_b4_batch", "bench_b4_mapped"):
                stack.wait_for_dag(dag_id, timeout=180)
            ideal_guess = count * sum(SECONDS) / 2 / max_active / speedup
            log(
                f"B4 batch: {count} records, max_active {max_active}, speed-up {speedup:g} (ideal ~{ideal_guess:.0f} s)"
            )
            conf = {
                "records_uri": f"file://{records}",
                "destination": f"file://{work / 'documents'}",
                "manifest_uri": f"file://{work / 'manifest.jsonl'}",
            }
            batch = checked_batch_run(stack, emulator, work, conf, count, timeout=ideal_guess * 4 + 600)
            log(
                f"   batch: {batch['wall_seconds']:.1f} s wall, {batch['slot_seconds']:.1f} slot-s, {batch['resumes']} resumes"
            )
            log(f"B4 mapped: {mapped_count} records")
            mapped = one_run(
                stack, "bench_b4_mapped", {"count": mapped_count}, timeout=mapped_count * 20 + 600
            )
            mapped["records"] = mapped_count
            if mapped["state"] != "success":
                raise RuntimeError(
                    f"B4 mapped run {mapped['state']}: {mapped['task_states']}\n{stack.dump()}"
                )
            loads["after the mapped run"] = loadavg()
            log(f"   mapped: {mapped['wall_seconds']:.1f} s wall, {mapped['slot_seconds']:.1f} slot-s")
        finally:
            stack.stop_all()
    finally:
        emulator.stop()
    mean = batch["mean_duration"]
    ideal = count * mean / max_active / speedup
    estimate = _mapped_estimate(mapped, count, max_active, mean, speedup)
    return {
        "records": count,
        "mapped_records": mapped_count,
        "max_active": max_active,
        "speedup": speedup,
        "parallelism": PARALLELISM,
        "seconds": list(SECONDS),
        "ideal_seconds": ideal,
        "mapped_estimate_seconds": estimate,
        "batch": batch,
        "mapped": mapped,
        "load": loads,
    }


# --- report --------------------------------------------------------------------------------------


def _verdict(ok: bool) -> str:
    return "**met**" if ok else "**missed**"


def section(b4: dict[str, Any]) -> list[str]:
    b, m = b4["batch"], b4["mapped"]
    n, mn = b4["records"], b4["mapped_records"]
    ideal, estimate = b4["ideal_seconds"], b4["mapped_estimate_seconds"]
    ratio = b["wall_seconds"] / ideal
    faster = estimate / b["wall_seconds"]
    busy = b["slot_seconds"] / b["wall_seconds"]
    db_mib = b["db_growth_bytes"] / 2**20
    scaled = "" if mn == n else f" (measured with {mn:,} records, estimated for {n:,}: see below)"
    out = [
        "## B4: a batch from one task against mapped task instances",
        "",
        "![B4](b4_batch.png)",
        "",
        f"{n:,} records, executions of {b4['seconds'][0]:g}-{b4['seconds'][1]:g} emulated seconds "
        f"(mean {b['mean_duration']:.2f} s, speed-up {b4['speedup']:g}), `max_active` {b4['max_active']}, "
        f"documents to `file://`; scheduler, triggerer, dag-processor and api-server of `tests/system/stack.py` "
        f"(LocalExecutor, parallelism {b4['parallelism']}, SQLite). One run each; load averages (1/5/15 min): "
        + ", ".join(f"{k}: {v}" for k, v in b4.get("load", {}).items())
        + ".",
        "",
        "| | batch (`SmartFlowsRunFlowBatchOperator`) | mapped `SmartFlowsRunFlowOperator` |",
        "|---|---|---|",
        f"| records | {n:,} (all succeeded, one execution each, documents checked) | {mn:,} (no downloads) |",
        f"| wall time | {b['wall_seconds']:.1f} s | {m['wall_seconds']:.1f} s measured; {estimate:.0f} s for {n:,}{scaled} |",
        f"| worker-slot seconds (task instances `running`) | {b['slot_seconds']:.1f} | {m['slot_seconds']:.1f} |",
        f"| busy / wall | {busy:.1%} (in-task {b['task_seconds']:.1f} s over {b['resumes']} resumes) | "
        f"{m['slot_seconds'] / m['wall_seconds'] / PARALLELISM:.0%} of {PARALLELISM} slots |",
        f"| triggerer CPU seconds | {b['triggerer_cpu_seconds']:.1f} | {m['triggerer_cpu_seconds']:.1f} |",
        f"| metadata DB growth | {b['db_growth_bytes'] / 2**20:.3f} MiB | {m['db_growth_bytes'] / 2**20:.3f} MiB |",
        f"| task instances | {sum(b['task_states'].values())} | {sum(m['task_states'].values())} |",
        "",
        f"- Wall / ideal ({ideal:.1f} s = records x mean duration / max_active / speed-up): **{ratio:.2f}** "
        f"(target ≤ {TARGET_IDEAL_RATIO}: {_verdict(ratio <= TARGET_IDEAL_RATIO)}).",
        f"- Mapped / batch for {n:,} records: **{faster:.1f}x** (target ≥ {TARGET_SPEEDUP:g}x: "
        f"{_verdict(faster >= TARGET_SPEEDUP)}).",
        f"- Batch DB growth {db_mib:.3f} MiB (target < {TARGET_DB_MIB:g} MiB: {_verdict(db_mib < TARGET_DB_MIB)}).",
        f"- Worker busy: {busy:.1%} of the wall time.",
    ]
    if mn != n:
        out.append(
            f"- The mapped run's time for {n:,} records is estimated from its {mn:,}: each record held a worker "
            f"slot {m['slot_seconds'] / mn:.2f} s (its start, then its resume), {PARALLELISM} slots at once, "
            f"and no less than the executions themselves need ({n:,} x mean / max_active / speed-up)."
        )
    return [*out, ""]


def charts(b4: dict[str, Any], out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    b = b4["batch"]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    names = ["ideal", "batch", f"mapped (est. {b4['records']:,})"]
    walls = [b4["ideal_seconds"], b["wall_seconds"], b4["mapped_estimate_seconds"]]
    ax1.bar(names, walls, color=["#8a8a8a", "#2a7ab0", "#d08a2c"])
    ax1.axhline(TARGET_IDEAL_RATIO * b4["ideal_seconds"], color="red", ls="--", lw=1, label="1.2 x ideal")
    ax1.set_ylabel("wall time (s)")
    ax1.set_yscale("log")
    ax1.legend(fontsize=8)
    ax1.set_title(f"{b4['records']:,} records, max_active {b4['max_active']}", fontsize=10)
    m = b4["mapped"]
    ax2.bar(
        ["batch", f"mapped ({b4['mapped_records']:,})"],
        [b["db_growth_bytes"] / 2**20, m["db_growth_bytes"] / 2**20],
        color=["#2a7ab0", "#d08a2c"],
    )
    ax2.axhline(TARGET_DB_MIB, color="red", ls="--", lw=1, label="target < 1 MiB (batch)")
    ax2.set_ylabel("metadata DB growth (MiB)")
    ax2.legend(fontsize=8)
    fig.suptitle("B4: one batch task against mapped task instances (real Airflow services)", fontsize=10)
    fig.tight_layout()
    fig.savefig(out / "b4_batch.png", dpi=110)
    plt.close(fig)
    return ["b4_batch.png"]


def main(argv: list[str]) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--records", type=int, default=10_000)
    p.add_argument("--mapped", type=int, default=400, help="records of the mapped run")
    p.add_argument("--max-active", type=int, default=200)
    p.add_argument("--speedup", type=float, default=1.0)
    p.add_argument("--out", type=Path, default=None, help="JSON of the raw results")
    p.add_argument("--results", type=Path, default=None, help="RESULTS.md whose B4 section to rewrite")
    p.add_argument("--store", choices=("file", "s3"), default="file", help="s3: the batch alone, to moto")
    p.add_argument("--results-json", type=Path, default=None, help="s3: results.json to put b4_s3 in")
    args = p.parse_args(argv)
    if args.store == "s3":
        from benchmarks import b4_s3

        b4_s3.main(args.records, args.out, args.results_json)
        return
    with tempfile.TemporaryDirectory(prefix="bench-b4-") as tmp:
        result = run(args.records, args.mapped, args.max_active, args.speedup, Path(tmp))
    text = json.dumps(result, indent=1)
    if args.out:
        args.out.write_text(text)
    if args.results:
        charts(result, args.results.parent)
        replace_section(args.results, section(result), "## B4", before="## Profile")
    print("\n".join(section(result)))
    if not args.out and not args.results:
        print(text)


if __name__ == "__main__":
    main(sys.argv[1:])

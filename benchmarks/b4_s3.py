"""B4 with documents to S3: the batch run of ``b4_batch.py`` writing each record's document to a moto
server instead of ``file://`` (``python -m benchmarks.b4_batch --store s3``).

Same stack, DAG and flow as B4's batch. Moto runs in its own process group on a free port (its
request log, one werkzeug line per request, to a file); the bucket is created here; the services
get ``AIRFLOW_CONN_AWS_BENCH`` (``endpoint_url`` in its extra) and the DAG run's conf names it as
``destination_conn_id``. The same records go once to ``file://`` first, on the same services, so
that the in-task seconds of the two differ by the store alone.

Where the time goes, from what was recorded: the metadata DB (trigger, the task's first start and
its end, the DAG run's end), the emulator (its request log: execution starts and document
downloads; its executions' planned durations) and moto's request log (uploads per method).
Every object is checked afterwards: count, size, sha256 against the emulator's document.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from benchmarks.b4_batch import DAGS, PARALLELISM, SECONDS, _query, _ts, checked_batch_run, scenario
from benchmarks.common import ROOT, loadavg, log

BUCKET = "bench-b4"
CONN_ID = "aws_bench"
MAX_ACTIVE = 200
_MOTO_LINE = re.compile(r'\[(?P<ts>[^\]]+)\] "(?P<method>[A-Z]+) (?P<path>\S+) HTTP/[\d.]+" (?P<status>\d+)')


class Moto:
    """A moto server on 127.0.0.1 in its own process group, its request log in ``log_path``."""

    def __init__(self, work: Path) -> None:
        from tests.support.processes import free_port, start_group, wait_listening

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = work / "moto.log"
        self._log = self.log_path.open("w")
        binary = Path(sys.executable).parent / "moto_server"
        self.proc = start_group([str(binary), "-H", "127.0.0.1", "-p", str(self.port)], stderr=self._log)
        try:
            wait_listening(self.port, self.proc, "moto", log=self.log_path)
        except (AssertionError, RuntimeError):
            self.stop()
            raise
        self.client().create_bucket(Bucket=BUCKET)

    def client(self) -> Any:
        import boto3

        keys = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
        return boto3.client("s3", endpoint_url=self.url, region_name="us-east-1", **keys)

    def env(self) -> dict[str, str]:
        extra = {"endpoint_url": self.url, "region_name": "us-east-1"}
        conn = {"conn_type": "aws", "login": "testing", "password": "testing", "extra": extra}
        return {f"AIRFLOW_CONN_{CONN_ID.upper()}": json.dumps(conn)}

    def requests(self) -> list[dict[str, Any]]:
        """The request log so far: time (whole seconds), method, path, status."""
        self._log.flush()
        found = [m.groupdict() for m in map(_MOTO_LINE.search, self.log_path.read_text().splitlines()) if m]
        for one in found:
            one["ts"] = time.mktime(time.strptime(one["ts"], "%d/%b/%Y %H:%M:%S"))
        return found

    def stop(self) -> None:
        from tests.support.processes import stop_group

        stop_group(self.proc, grace=10)
        self._log.close()


def verify(moto: Moto, emulator: Any, manifest: Path, prefix: str) -> dict[str, Any]:
    """Every object: one per manifest document, its size and sha256 those of the emulator's document."""
    client = moto.client()
    objects = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix + "/"):
        objects.update({o["Key"]: o["Size"] for o in page.get("Contents", [])})
    docs = [d for line in manifest.read_text().splitlines() if line for d in json.loads(line)["documents"]]

    def check(doc: dict[str, Any]) -> bool:
        key = doc["uri"].split(f"{BUCKET}/", 1)[1]
        data = client.get_object(Bucket=BUCKET, Key=key)["Body"].read()
        want = emulator.admin("GET", f"/_emulator/documents/{doc['document_id']}/sha256")
        return [len(data), hashlib.sha256(data).hexdigest()] == [want["size"], want["sha256"]]

    with ThreadPoolExecutor(8) as pool:
        bad = sum(1 for ok in pool.map(check, docs) if not ok)
    if bad or len(objects) != len(docs):
        raise RuntimeError(f"B4 S3: {len(objects)} objects for {len(docs)} documents, {bad} differ")
    return {"objects": len(objects), "object_bytes": sum(objects.values()), "objects_differing": bad}


def timeline(stack: Any, emulator: Any, batch: dict[str, Any], moto: list[dict[str, Any]]) -> dict[str, Any]:
    """Seconds from the trigger: the task's first start and its end, the DAG run's end; the first and
    last execution start and document download (emulator), the first and last upload (moto)."""
    db, key = stack.home / "airflow.db", (batch["dag_id"], batch["run_id"])
    ((start, end),) = _query(
        db, "SELECT start_date, end_date FROM task_instance WHERE dag_id = ? AND run_id = ?", key
    )
    ((run_end,),) = _query(db, "SELECT end_date FROM dag_run WHERE dag_id = ? AND run_id = ?", key)
    t0 = _ts(run_end) - batch["wall_seconds"]
    requests = emulator.admin("GET", "/_emulator/requests")
    starts = [
        _ts(r["ts"]) for r in requests if r["method"] == "POST" and r["path"].endswith("/flows/executions")
    ]
    downloads = [_ts(r["ts"]) for r in requests if r["path"].endswith("/content")]
    puts = [r["ts"] for r in moto if r["method"] == "PUT"] or [None]
    return {
        "task_start": _ts(start) - t0,
        "task_end": _ts(end) - t0,
        "run_end": batch["wall_seconds"],
        "first_start": min(starts) - t0,
        "last_start": max(starts) - t0,
        "first_download": min(downloads) - t0,
        "last_download": max(downloads) - t0,
        "first_upload": None if puts[0] is None else min(puts) - t0,  # moto logs whole seconds
        "last_upload": None if puts[0] is None else max(puts) - t0,
        "emulator_requests": dict(Counter(f"{r['method']} {_route(r['path'])}" for r in requests)),
    }


def _route(path: str) -> str:
    return re.sub(r"/(executions|documents)/[^/]+", r"/\1/{id}", path.removeprefix("/api/v1"))


def _batch(stack: Any, emulator: Any, work: Path, count: int, prefix: str, **conf: str) -> dict[str, Any]:
    """One run of ``bench_b4_batch`` over ``count`` records of its own (keys ``prefix``00000...), checked."""
    work.mkdir(parents=True, exist_ok=True)
    records = work / "records.jsonl"
    records.write_text("".join(json.dumps({"id": f"{prefix}{i:05d}"}) + "\n" for i in range(count)))
    conf.update(records_uri=f"file://{records}", manifest_uri=f"file://{work / 'manifest.jsonl'}")
    emulator.admin("DELETE", "/_emulator/requests")
    ideal = count * sum(SECONDS) / 2 / MAX_ACTIVE
    batch = checked_batch_run(stack, emulator, work, conf, count, timeout=ideal * 4 + 600)
    log(
        f"   {batch['wall_seconds']:.1f} s wall, {batch['task_seconds']:.1f} s in the task, {batch['resumes']} resumes"
    )
    return batch


def _stack(work: Path, emulator: Any, moto: Moto) -> Any:
    from tests.support.airflow_stack import AirflowStack

    env = {
        "AIRFLOW_CONN_SMARTFLOWS_DEFAULT": json.dumps(emulator.connection()),
        "AIRFLOW__CORE__PARALLELISM": str(PARALLELISM),
        "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG": str(MAX_ACTIVE),
        "AIRFLOW__TRIGGERER__CAPACITY": "1000",
        "BENCH_B4_MAX_ACTIVE": str(MAX_ACTIVE),
        "PYTHONPATH": str(ROOT),
        **moto.env(),
    }
    (work / "airflow-home").mkdir(parents=True, exist_ok=True)
    return AirflowStack(work / "airflow-home", DAGS, env, extra_logs=[emulator.log_path])


def run(count: int, work: Path) -> dict[str, Any]:
    """The file run, then the S3 run, of ``count`` records each, on the same services."""
    from tests.support.airflow_stack import EmulatorProcess

    loads = {"start": loadavg()}
    (work / "scenario.json").write_text(json.dumps(scenario()))
    emulator = EmulatorProcess(work / "emulator", scenario=work / "scenario.json", speedup=1.0, quiet=True)
    moto = None
    try:
        moto = Moto(work)
        stack = _stack(work, emulator, moto)
        try:
            log("B4 S3: starting Airflow services")
            stack.start_all()
            stack.wait_for_dag("bench_b4_batch", timeout=180)
            log(f"B4 S3: {count} records to file:// (the same services' baseline)")
            file = _batch(
                stack, emulator, work / "file", count, "f", destination=f"file://{work / 'file' / 'docs'}"
            )
            file["timeline"] = timeline(stack, emulator, file, [])
            loads["after the file run"] = loadavg()
            log(f"B4 S3: {count} records to s3:// on moto")
            before = len(moto.requests())
            s3 = _batch(
                stack,
                emulator,
                work / "s3",
                count,
                "s",
                destination=f"s3://{BUCKET}/b4",
                destination_conn_id=CONN_ID,
            )
            uploads = moto.requests()[before:]
            s3["timeline"] = timeline(stack, emulator, s3, uploads)
            loads["after the S3 run"] = loadavg()
        finally:
            stack.stop_all()
        s3["store_requests"] = dict(Counter(f"{r['method']} {r['status']}" for r in uploads))
        s3.update(verify(moto, emulator, work / "s3" / "manifest.jsonl", "b4"))
    finally:
        if moto is not None:
            moto.stop()
        emulator.stop()
    return {
        "records": count,
        "max_active": MAX_ACTIVE,
        "speedup": 1.0,
        "seconds": list(SECONDS),
        "file": file,
        "s3": s3,
        "load": loads,
    }


# --- report --------------------------------------------------------------------------------------


def _per_doc(counts: dict[str, int], n: int) -> str:
    return ", ".join(f"{k} {v / n:.2f}" for k, v in sorted(counts.items())) or "none"


def section(r: dict[str, Any]) -> list[str]:
    """The sub-section "### B4 with documents to S3" (appended to B4's section by hand)."""
    f, s, n = r["file"], r["s3"], r["records"]
    t = s["timeline"]
    ideal = max(n * s["mean_duration"] / r["max_active"] / r["speedup"], SECONDS[1] / r["speedup"])
    sf = {k: v for k, v in t["emulator_requests"].items() if not k.startswith(("GET /_emulator", "DELETE"))}
    upload_ms = (s["task_seconds"] - f["task_seconds"]) / n * 1000
    return [
        "### B4 with documents to S3",
        "",
        f"The batch run of B4 (same DAG, flow, services, `max_active` {r['max_active']}) with each record's "
        f"document written to `s3://` on a moto server (its own process group, free port, bucket made by the "
        f"benchmark, connection `AIRFLOW_CONN_AWS_BENCH` with `endpoint_url`), {n:,} records: enough to see "
        "the per-document cost, which is all that changes. The same services first ran the same number of "
        "records to `file://`, so the two differ by the store alone. One run each "
        "(`python -m benchmarks.b4_batch --store s3 --records 1000`); load averages (1/5/15 min): "
        + ", ".join(f"{k}: {v}" for k, v in r["load"].items())
        + ".",
        "",
        "| | `file://` | `s3://` (moto) |",
        "|---|---|---|",
        f"| documents/s end to end | {n / f['wall_seconds']:.1f} | **{n / s['wall_seconds']:.1f}** |",
        f"| wall time (trigger to the DAG run's end) | {f['wall_seconds']:.1f} s | {s['wall_seconds']:.1f} s |",
        f"| in-task seconds (checkpoint) / resumes | {f['task_seconds']:.1f} s / {f['resumes']} | "
        f"{s['task_seconds']:.1f} s / {s['resumes']} |",
        f"| in-task ms per record | {f['task_seconds'] / n * 1000:.1f} | {s['task_seconds'] / n * 1000:.1f} |",
        f"| triggerer CPU seconds | {f['triggerer_cpu_seconds']:.1f} | {s['triggerer_cpu_seconds']:.1f} |",
        "",
        f"- Where the S3 run's {s['wall_seconds']:.1f} s went (seconds from the trigger): the task first started "
        f"at {t['task_start']:.1f}; executions were started from {t['first_start']:.1f} to {t['last_start']:.1f} "
        f"(emulator log); documents were downloaded from {t['first_download']:.1f} to {t['last_download']:.1f} and "
        f"uploaded from {t['first_upload']:.0f} to {t['last_upload']:.0f} (moto logs whole seconds); the task "
        f"ended at {t['task_end']:.1f} and the DAG run at {t['run_end']:.1f}. The executions alone need "
        f"at least {ideal:.1f} s ({n:,} x mean {s['mean_duration']:.2f} s / {r['max_active']}, and no less "
        f"than the longest, {SECONDS[1]:g} s).",
        f"- Worker time: {s['task_seconds']:.1f} s in the task ({s['task_seconds'] / s['wall_seconds']:.0%} of the wall; "
        f"deferred the rest) against {f['task_seconds']:.1f} s for `file://`: S3 adds about {upload_ms:.1f} ms "
        "per document (download to the store, its upload and the manifest's line).",
        f"- Store requests per document (moto's log, method and status): {_per_doc(s['store_requests'], n)}. "
        f"Smart Flows requests per document (emulator's log): {_per_doc(sf, n)}.",
        f"- Checked afterwards: {s['objects']:,} objects ({s['object_bytes'] / 1e6:.2f} MB) for {n:,} manifest "
        f"documents, {s['objects_differing']} differing from the emulator's (size and sha256 of every object).",
        "",
    ]


def save(result: dict[str, Any], results_json: Path) -> None:
    """``result`` under ``results["b4_s3"]`` of ``results_json``; every other key left as it was."""
    saved = json.loads(results_json.read_text())
    saved["results"]["b4_s3"] = result
    results_json.write_text(json.dumps(saved, indent=1))


def main(count: int, out: Path | None, results_json: Path | None) -> None:
    import tempfile

    with tempfile.TemporaryDirectory(prefix="bench-b4-s3-") as tmp:
        result = run(count, Path(tmp))
    if out:
        out.write_text(json.dumps(result, indent=1))
    if results_json:
        save(result, results_json)
    print("\n".join(section(result)))

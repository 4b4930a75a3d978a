"""B3: streaming downloads of one large document, side by side with ``curl -o``.

Per size (1 GiB, 64 MiB) and run, three downloads of the same emulator URL over loopback, each in
its own process so that its peak RSS (VmHWM / ru_maxrss) is its own:
- ``ours-file``: ``SmartFlowsHook.download_document`` to ``file://`` (1 MiB chunks, sha256, atomic);
- ``curl``: ``curl -s -o FILE`` of the same URL (the practical limit of this loopback);
- ``ours-s3``: ``download_document`` to ``s3://`` on a moto server (s3fs multipart upload).
The hook's process reports its RSS after imports (baseline) and its peak, so the download's own
memory is peak - baseline. Throughput is bytes / wall seconds of the download call (MB = 10^6 bytes).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import ROOT, Emulator, free_port, log, stop_group, summary

SIZES = {"1 GiB": 2**30, "64 MiB": 64 * 2**20}


def scenario(sizes: dict[str, int]) -> dict[str, Any]:
    return {
        "replace_default_flows": True,
        "flows": [
            {
                "id": f"b3-{size}",
                "displayName": f"B3 {label}",
                "input": "any",
                "steps": [{"message": "Rendering", "percentage": 50, "seconds": 0.01}],
                "final_status": "Success",
                "documents": [{"displayName": f"Big {size}", "contentType": "application/pdf", "size": size}],
            }
            for label, size in sizes.items()
        ],
    }


# --- child: one download with the hook -------------------------------------------------------------


def child(argv: list[str]) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--doc", required=True)
    p.add_argument("--dest", required=True)
    p.add_argument("--conn", default=None)
    args = p.parse_args(argv)
    from airflow_provider_smartflows.hooks.smartflows import SmartFlowsHook
    from benchmarks.common import current_rss_bytes, peak_rss_bytes

    hook = SmartFlowsHook("smartflows_bench")
    hook.get_document(args.doc)  # connection, session and first request out of the timed part
    if args.dest.startswith("s3://"):
        from airflow.providers.common.compat.sdk import ObjectStoragePath

        ObjectStoragePath(args.dest, conn_id=args.conn).parent.exists()  # s3fs client set-up
    baseline = current_rss_bytes()
    start = time.perf_counter()
    done = hook.download_document(args.doc, args.dest, conn_id=args.conn, overwrite=True)
    seconds = time.perf_counter() - start
    print(
        json.dumps(
            {
                "seconds": seconds,
                "size": done.size,
                "sha256": done.sha256,
                "baseline_rss": baseline,
                "peak_rss": peak_rss_bytes(),
            }
        )
    )


# --- parent -----------------------------------------------------------------------------------------


def _run_timed(args: list[str], env: dict[str, str], timeout: float = 900) -> tuple[float, int, str, str]:
    """(wall seconds, peak RSS bytes, stdout, stderr).

    The peak is the process's VmHWM read from /proc every 5 ms until it exits (ru_maxrss of a
    child also counts the memory of the Python parent it was forked from, before its exec).
    """
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(args, stdout=out, stderr=err, env=env, cwd=ROOT, start_new_session=True)
        deadline = time.monotonic() + timeout
        status_file = Path(f"/proc/{proc.pid}/status")
        hwm = 0
        while True:
            try:
                for line in status_file.read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        hwm = max(hwm, int(line.split()[1]) * 1024)
            except (OSError, ValueError):
                pass
            pid, status, _usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                stop_group(proc, grace=2)
                raise RuntimeError(f"{args[:3]} timed out")
            time.sleep(0.005)
        seconds = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if proc.returncode != 0:
        raise RuntimeError(f"{args[:4]} failed ({proc.returncode}): {stderr[-2000:]}")
    return seconds, hwm, stdout, stderr


class MotoServer:
    """moto's S3 server on 127.0.0.1 in its own process group, stopped by PID."""

    def __init__(self) -> None:
        exe = shutil.which("moto_server", path=os.path.dirname(sys.executable))
        if exe is None:
            raise RuntimeError("moto_server is not installed (pip install -e '.[dev]')")
        self.port = free_port()
        self.proc = subprocess.Popen(
            [exe, "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError("moto_server did not start") from None
                time.sleep(0.05)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
        stop_group(self.proc, grace=10)


def run(sizes: dict[str, int], repeats: int, work: Path) -> dict[str, Any]:
    import boto3

    work.mkdir(parents=True, exist_ok=True)
    scen = work / "b3-scenario.json"
    scen.write_text(json.dumps(scenario(sizes)))
    curl = shutil.which("curl")
    raw: list[dict[str, Any]] = []
    notes: list[str] = []
    if curl is None:
        notes.append("curl is not installed: the curl column is missing (no socket-reader fallback was run)")
    moto = MotoServer()
    try:
        with Emulator(work, scenario=scen, speedup=1.0) as emu:
            env = dict(os.environ)
            env.update(
                AIRFLOW_HOME=str(work / "airflow-home"),
                AIRFLOW__CORE__LOAD_EXAMPLES="False",
                AIRFLOW_CONN_SMARTFLOWS_BENCH=json.dumps(emu.connection()),
                AIRFLOW_CONN_AWS_BENCH=json.dumps(
                    {
                        "conn_type": "aws",
                        "login": "testing",
                        "password": "testing",
                        "extra": {"endpoint_url": moto.url, "region_name": "us-east-1"},
                    }
                ),
                AWS_ACCESS_KEY_ID="testing",
                AWS_SECRET_ACCESS_KEY="testing",
                PYTHONPATH=str(ROOT),
            )
            s3 = boto3.client(
                "s3",
                endpoint_url=moto.url,
                region_name="us-east-1",
                aws_access_key_id="testing",
                aws_secret_access_key="testing",
            )
            s3.create_bucket(Bucket="bench")
            for label, size in sizes.items():
                ex = emu.api("POST", "/flows/executions", params={"flowId": f"b3-{size}"})
                time.sleep(0.1)
                docs = next(e for e in emu.admin("GET", "/_emulator/executions") if e["id"] == ex["id"])[
                    "documents"
                ]
                doc = docs[0]
                expected = emu.admin("GET", f"/_emulator/documents/{doc}/sha256")
                url = f"{emu.base_url}/api/v1/documents/{doc}/content"
                for rep in range(repeats):
                    target = work / f"doc-{rep}.pdf"
                    base = [sys.executable, "-m", "benchmarks.b3_downloads", "child", "--doc", doc]
                    # ours -> file://
                    log(f"B3 {label} run {rep + 1}/{repeats}: ours -> file://")
                    wall, rss, out, _ = _run_timed([*base, "--dest", f"file://{target}"], env)
                    data = json.loads(out.strip().splitlines()[-1])
                    ok = data["sha256"] == expected["sha256"] and data["size"] == size
                    raw.append(_row(label, size, "ours-file", data["seconds"], rss, data, ok))
                    target.unlink(missing_ok=True)
                    # curl
                    if curl:
                        log(f"B3 {label} run {rep + 1}/{repeats}: curl -o")
                        args = [
                            curl,
                            "-sS",
                            "--fail",
                            "-o",
                            str(target),
                            "-H",
                            f"X-API-Key: {emu.api_key}",
                            url,
                        ]
                        wall, rss, _, _ = _run_timed(args, env)
                        ok = target.stat().st_size == size
                        raw.append(_row(label, size, "curl", wall, rss, None, ok))
                        target.unlink(missing_ok=True)
                    # ours -> s3://
                    log(f"B3 {label} run {rep + 1}/{repeats}: ours -> s3:// (moto)")
                    key = f"s3://bench/{rep}/doc-{size}.pdf"
                    wall, rss, out, _ = _run_timed([*base, "--dest", key, "--conn", "aws_bench"], env)
                    data = json.loads(out.strip().splitlines()[-1])
                    head = s3.head_object(Bucket="bench", Key=f"{rep}/doc-{size}.pdf")
                    ok = data["sha256"] == expected["sha256"] and head["ContentLength"] == size
                    raw.append(_row(label, size, "ours-s3", data["seconds"], rss, data, ok))
                    s3.delete_object(Bucket="bench", Key=f"{rep}/doc-{size}.pdf")
    finally:
        moto.stop()
    table: dict[str, Any] = {}
    for label in sizes:
        for how in ("ours-file", "curl", "ours-s3"):
            rows = [r for r in raw if r["size_label"] == label and r["how"] == how]
            if rows:
                table[f"{label}/{how}"] = {
                    m: summary([float(r[m]) for r in rows])
                    for m in ("mb_per_s", "seconds", "peak_rss_mib", "download_rss_mib")
                }
                table[f"{label}/{how}"]["verified"] = all(r["verified"] for r in rows)
                table[f"{label}/{how}"]["runs"] = len(rows)
    return {"sizes": sizes, "repeats": repeats, "table": table, "raw": raw, "notes": notes}


def _row(
    label: str, size: int, how: str, seconds: float, rss: int, data: dict[str, Any] | None, ok: bool
) -> dict[str, Any]:
    baseline = data["baseline_rss"] if data else 0
    peak = data["peak_rss"] if data else rss
    row = {
        "size_label": label,
        "size": size,
        "how": how,
        "seconds": seconds,
        "mb_per_s": size / 1e6 / seconds,
        "peak_rss_mib": peak / 2**20,
        "download_rss_mib": (peak - baseline) / 2**20 if data else float("nan"),
        "verified": ok,
    }
    log(
        f"   {row['mb_per_s']:.0f} MB/s, peak RSS {row['peak_rss_mib']:.1f} MiB, "
        f"download adds {row['download_rss_mib']:.1f} MiB, verified {ok}"
    )
    return row


def main(argv: list[str]) -> None:
    if argv and argv[0] == "child":
        child(argv[1:])
        return
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--small", action="store_true", help="4 MiB and 1 MiB (smoke)")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    sizes = {"4 MiB": 4 * 2**20, "1 MiB": 2**20} if args.small else SIZES
    with tempfile.TemporaryDirectory(prefix="bench-b3-") as tmp:
        result = run(sizes, args.repeats, Path(tmp))
    text = json.dumps(result, indent=1)
    if args.out:
        args.out.write_text(text)
    else:
        print(text)


if __name__ == "__main__":
    main(sys.argv[1:])

"""B5: many small documents from the emulator to each store, ours beside the store's own client.

N documents of about 200 KB (sizes spread 50 KB - 2 MB, deterministic) made by one emulator
execution are written to each store (file, S3 on moto, Azure on Azurite, GCS on its emulator),
at the download operator's default concurrency (4) and at 16, each run in its own process by:
- ``ours``: ``transfer.download_all`` (``in_parallel`` + ``hook.download_document`` on a
  ``HookPool``), the code of the download operator and the batch;
- ``reference``: one GET of each document (a ``requests.Session`` per thread), then the store's
  own client uploading the bytes on the same number of threads (boto3 ``put_object``,
  azure-storage-blob ``upload_blob``, google-cloud-storage ``upload_from_string`` (gcsfs ``pipe``
  when it is absent), a plain file write).
Per run: documents/s over the transfer, CPU-s per document (the process's user + system time,
all threads), own RSS (peak minus before, peak reset after set-up), HTTP requests per document to
Smart Flows (the emulator's request log) and to the store (counted in the process by wrapping
``urllib3``'s ``urlopen`` and ``aiohttp``'s ``ClientSession._request``, by the store's port and HTTP method:
retries count). Every object is read back after the timed part and checked (size, sha256).

``python -m benchmarks.b5_small_documents [--documents N] [--stores file,s3,azure,gcs]
[--results benchmarks/RESULTS.md]`` runs it alone and rewrites only the "## B5" section;
``benchmarks/run.py`` calls :func:`run` and :func:`section`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import random
import resource
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from benchmarks.b3_downloads import BUCKET, Server, _attach_gcs, _available, _start_store
from benchmarks.common import ROOT, Emulator, loadavg, log, replace_section, run_json_subprocess

STORES = ("file", "s3", "azure", "gcs")
CONCURRENCIES = (4, 16)
TARGET_RATIO = 0.8
HOWS = ("ours", "reference")


def sizes(count: int, seed: int = 5) -> list[int]:
    """Deterministic sizes around 200 KB (log-normal, median 170 KB), clipped to 50 KB - 2 MB."""
    rng = random.Random(seed)
    return [int(min(2_000_000, max(50_000, rng.lognormvariate(12.04, 0.6)))) for _ in range(count)]


def scenario(count: int) -> dict[str, Any]:
    return {
        "replace_default_flows": True,
        "flows": [
            {
                "id": "b5",
                "displayName": "B5 small documents",
                "input": "any",
                "steps": [{"message": "Rendering", "percentage": 50, "seconds": 0.01}],
                "final_status": "Success",
                "documents": [
                    {"displayName": f"Invoice {i}", "contentType": "application/pdf", "size": size}
                    for i, size in enumerate(sizes(count))
                ],
            }
        ],
    }


# --- children: one run each, in its own process ------------------------------------------------


class RequestCounter:
    """HTTP requests per port, counted where every client of the stores sends them: ``urllib3``
    (requests, botocore) and ``aiohttp`` (s3fs/aiobotocore, adlfs, gcsfs)."""

    def __init__(self) -> None:
        self.counts: dict[tuple[int, str], int] = {}
        self._lock = threading.Lock()

    def add(self, port: int | None, method: str) -> None:
        with self._lock:
            key = (port or 0, method.upper())
            self.counts[key] = self.counts.get(key, 0) + 1

    def install(self) -> None:
        import aiohttp
        import urllib3.connectionpool
        from yarl import URL

        counter = self
        urlopen = urllib3.connectionpool.HTTPConnectionPool.urlopen
        request = aiohttp.ClientSession._request

        def counted_urlopen(pool: Any, method: str, *args: Any, **kwargs: Any) -> Any:
            counter.add(pool.port, method)
            return urlopen(pool, method, *args, **kwargs)

        async def counted_request(session: Any, method: str, url: Any, *args: Any, **kwargs: Any) -> Any:
            counter.add(URL(str(url)).port, method)
            return await request(session, method, url, *args, **kwargs)

        urllib3.connectionpool.HTTPConnectionPool.urlopen = counted_urlopen  # type: ignore[method-assign]
        aiohttp.ClientSession._request = counted_request  # type: ignore[method-assign]

    def total(self, port: int) -> int:
        return sum(self.by_method(port).values())

    def by_method(self, port: int) -> dict[str, int]:
        return {method: n for (p, method), n in self.counts.items() if p == port}


def _status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return 0


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _dest(kind: str, work: str, prefix: str, index: int) -> tuple[str, str | None]:
    key = f"{prefix}/doc-{index:05d}.pdf"
    if kind == "file":
        return f"file://{work}/{key}", None
    if kind == "s3":
        return f"s3://{BUCKET}/{key}", "aws_bench"
    if kind == "azure":
        return f"abfs://{BUCKET}/{key}", "wasb_bench"
    return f"gs://gcs_bench@{BUCKET}/{key}", None


def child(argv: list[str]) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--how", required=True)
    p.add_argument("--kind", required=True)
    p.add_argument("--concurrency", type=int, required=True)
    p.add_argument("--spec", required=True, help="JSON: documents, expected, work, prefix, store_port")
    args = p.parse_args(argv)
    spec = json.loads(Path(args.spec).read_text())
    logging.getLogger("azure").setLevel(logging.WARNING)
    logging.getLogger("airflow_provider_smartflows").setLevel(logging.WARNING)
    counter = RequestCounter()
    counter.install()
    _attach_gcs()
    docs = spec["documents"]
    dests = [_dest(args.kind, spec["work"], spec["prefix"], i) for i in range(len(docs))]
    transfer = (_ours if args.how == "ours" else _reference)(args.kind, args.concurrency, docs, dests)
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS: the set-up's peak is not counted
    before, cpu0, store0 = _status("VmRSS"), _cpu(), counter.by_method(spec["store_port"])
    start = time.perf_counter()
    transfer()
    seconds = time.perf_counter() - start
    cpu, store1 = _cpu() - cpu0, counter.by_method(spec["store_port"])
    methods = {m: n - store0.get(m, 0) for m, n in sorted(store1.items()) if n > store0.get(m, 0)}
    peak = _status("VmHWM")
    bad = _verify(dests, spec["expected"])
    report = {
        "seconds": seconds,
        "cpu_seconds": cpu,
        "store_requests": sum(methods.values()) if args.kind != "file" else None,
        "store_methods": methods if args.kind != "file" else None,
        "own_rss_mib": (peak - before) / 2**20,
        "bad": bad,
    }
    print(json.dumps(report))


def _ours(kind: str, concurrency: int, docs: list[str], dests: list[tuple[str, str | None]]) -> Any:
    from airflow_provider_smartflows.hooks.smartflows import SmartFlowsHook
    from airflow_provider_smartflows.storage import check_destination, object_path
    from airflow_provider_smartflows.transfer import HookPool, download_all

    hook = SmartFlowsHook("smartflows_bench")
    hook.get_document(docs[0])  # the connection and first request out of the timed part
    conn = dests[0][1]
    jobs = [(doc, object_path(uri, conn)) for doc, (uri, _) in zip(docs, dests, strict=True)]
    check_destination(jobs[0][1])  # the store's client set-up, out of the timed part
    pool = HookPool(hook)
    pool.take(concurrency)  # as the operator's hooks: made once per task

    def transfer() -> None:
        download_all(jobs, pool, concurrency=concurrency, conn_id=conn)

    return transfer


def _reference(kind: str, concurrency: int, docs: list[str], dests: list[tuple[str, str | None]]) -> Any:
    import requests

    base = os.environ["B5_SMARTFLOWS_URL"]
    headers = {"X-API-Key": os.environ["B3_API_KEY"], "Accept-Encoding": "identity"}
    local = threading.local()
    upload = _uploader(kind)
    if kind == "file":
        Path(dests[0][0].removeprefix("file://")).parent.mkdir(parents=True, exist_ok=True)

    def one(index: int) -> None:
        session = getattr(local, "session", None)
        if session is None:
            session = local.session = requests.Session()
        response = session.get(f"{base}/api/v1/documents/{docs[index]}/content", headers=headers)
        response.raise_for_status()
        upload(dests[index][0], response.content)

    warm = requests.Session()
    warm.get(f"{base}/api/v1/documents/{docs[0]}", headers=headers).raise_for_status()

    def transfer() -> None:
        with ThreadPoolExecutor(concurrency) as pool:
            list(pool.map(one, range(len(docs))))

    return transfer


def _key(uri: str) -> str:
    return uri.split(f"{BUCKET}/", 1)[1]


def _uploader(kind: str) -> Any:
    if kind == "file":
        return lambda uri, data: Path(uri.removeprefix("file://")).write_bytes(data)  # folder made in set-up
    if kind == "s3":
        import boto3

        s3 = boto3.client("s3", endpoint_url=os.environ["B3_S3_ENDPOINT"], region_name="us-east-1")
        s3.head_bucket(Bucket=BUCKET)
        return lambda uri, data: s3.put_object(Bucket=BUCKET, Key=_key(uri), Body=data)
    if kind == "azure":
        from azure.storage.blob import BlobServiceClient

        service = BlobServiceClient.from_connection_string(os.environ["B3_AZURE_CONNECTION_STRING"])
        container = service.get_container_client(BUCKET)
        container.get_container_properties()
        return lambda uri, data: container.upload_blob(_key(uri), data, overwrite=True)
    try:
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage
    except ImportError:
        from gcsfs.core import GCSFileSystem

        fs = GCSFileSystem(endpoint_url=os.environ["B3_GCS_ENDPOINT"], token="anon", project="bench")
        fs.ls(BUCKET)
        return lambda uri, data: fs.pipe_file(f"{BUCKET}/{_key(uri)}", data)
    client = storage.Client(
        project="bench",
        credentials=AnonymousCredentials(),
        client_options={"api_endpoint": os.environ["B3_GCS_ENDPOINT"]},
    )
    bucket = client.get_bucket(BUCKET)
    return lambda uri, data: bucket.blob(_key(uri)).upload_from_string(data)


def _verify(dests: list[tuple[str, str | None]], expected: list[list[Any]]) -> int:
    """Read every object back (untimed): how many differ from the emulator's (size, sha256);
    then remove them (the emulators keep objects in memory)."""
    from airflow_provider_smartflows.storage import object_path

    paths = [object_path(uri, conn) for uri, conn in dests]

    def check(index: int) -> bool:
        data = paths[index].read_bytes()
        return [len(data), hashlib.sha256(data).hexdigest()] == expected[index]

    with ThreadPoolExecutor(8) as pool:
        bad = sum(1 for ok in pool.map(check, range(len(paths))) if not ok)
    folder = paths[0].parent
    folder.fs.rm(str(folder.path) if folder.protocol != "file" else str(folder), recursive=True)
    return bad


# --- the parent ----------------------------------------------------------------------------------


def _documents(emu: Emulator) -> tuple[list[str], list[list[Any]]]:
    ex = emu.api("POST", "/flows/executions", params={"flowId": "b5"})
    for _ in range(200):
        found = next((e for e in emu.admin("GET", "/_emulator/executions") if e["id"] == ex["id"]), None)
        if found and found.get("documents"):
            break
        time.sleep(0.1)
    docs = found["documents"] if found else []
    expected = []
    for doc in docs:
        digest = emu.admin("GET", f"/_emulator/documents/{doc}/sha256")
        expected.append([digest["size"], digest["sha256"]])
    return docs, expected


def _smartflows_requests(emu: Emulator) -> int:
    return sum(1 for r in emu.admin("GET", "/_emulator/requests") if r["path"].startswith("/api/"))


def run(
    count: int, work: Path, stores: tuple[str, ...] = STORES, concurrencies: tuple[int, ...] = CONCURRENCIES
) -> dict[str, Any]:
    """Every store, concurrency and contender, interleaved, each run in its own process."""
    work.mkdir(parents=True, exist_ok=True)
    scen = work / "b5-scenario.json"
    scen.write_text(json.dumps(scenario(count)))
    notes: list[str] = []
    rows: list[dict[str, Any]] = []
    servers: list[Server] = []
    ports: dict[str, int] = {"file": 0}
    loads = {"start": loadavg()}
    env = {**os.environ, "AIRFLOW_HOME": str(work / "airflow-home"), "PYTHONPATH": str(ROOT)}
    env.update(AIRFLOW__CORE__LOAD_EXAMPLES="False", GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT="false")
    active = []
    for kind in stores:
        reason = _available(kind)
        if reason:
            notes.append(f"{kind}: not measured ({reason})")
            continue
        server = _start_store(kind, work, env)
        if server:
            servers.append(server)
            ports[kind] = server.port
        active.append(kind)
    os.environ.update({k: v for k, v in env.items() if k.startswith(("AIRFLOW_CONN_", "B3_"))})
    try:
        with Emulator(work, scenario=scen, speedup=1.0) as emu:
            env.update(AIRFLOW_CONN_SMARTFLOWS_BENCH=json.dumps(emu.connection()), B3_API_KEY=emu.api_key)
            env["B5_SMARTFLOWS_URL"] = emu.base_url
            docs, expected = _documents(emu)
            total = sum(size for size, _ in expected)
            for kind in active:
                for concurrency in concurrencies:
                    for how in HOWS:
                        prefix = f"b5-{how}-{concurrency}"
                        spec = work / "b5-spec.json"
                        spec.write_text(
                            json.dumps(
                                {
                                    "documents": docs,
                                    "expected": expected,
                                    "work": str(work),
                                    "prefix": prefix,
                                    "store_port": ports[kind],
                                }
                            )
                        )
                        log(f"B5 {kind} x{concurrency}: {how}, {len(docs)} documents")
                        emu.admin("DELETE", "/_emulator/requests")
                        args = [sys.executable, "-m", "benchmarks.b5_small_documents", "child"]
                        data = run_json_subprocess(
                            [
                                *args,
                                "--how",
                                how,
                                "--kind",
                                kind,
                                "--concurrency",
                                str(concurrency),
                                "--spec",
                                str(spec),
                            ],
                            env=env,
                        )
                        sf = _smartflows_requests(emu) - 1  # minus the set-up's warm-up request
                        n = len(docs)
                        row = {
                            "store": kind,
                            "concurrency": concurrency,
                            "how": how,
                            "documents": n,
                            "seconds": data["seconds"],
                            "docs_per_s": n / data["seconds"],
                            "mb_per_s": total / 1e6 / data["seconds"],
                            "cpu_s_per_doc": data["cpu_seconds"] / n,
                            "store_requests_per_doc": (
                                None if data["store_requests"] is None else data["store_requests"] / n
                            ),
                            "store_methods_per_doc": {
                                m: c / n for m, c in (data.get("store_methods") or {}).items()
                            },
                            "smartflows_requests_per_doc": sf / n,
                            "own_rss_mib": data["own_rss_mib"],
                            "verified": data["bad"] == 0,
                            "load": loadavg(),
                        }
                        log(
                            f"   {row['docs_per_s']:.1f} docs/s, CPU {row['cpu_s_per_doc'] * 1000:.1f} ms/doc, "
                            f"store req/doc {_requests(row)}, SF req/doc {row['smartflows_requests_per_doc']:.2f}, "
                            f"RSS {row['own_rss_mib']:.1f} MiB, verified {row['verified']}"
                        )
                        rows.append(row)
                loads[f"after {kind}"] = loadavg()
    finally:
        for server in servers:
            server.stop()
    loads["end"] = loadavg()
    return {
        "documents": len(rows and docs),
        "bytes": total if rows else 0,
        "stores": active,
        "concurrencies": list(concurrencies),
        "rows": rows,
        "notes": notes,
        "load": loads,
    }


def _find(b5: dict[str, Any], kind: str, concurrency: int, how: str) -> dict[str, Any] | None:
    return next(
        (r for r in b5["rows"] if (r["store"], r["concurrency"], r["how"]) == (kind, concurrency, how)), None
    )


def _num(value: float | None, digits: int) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _requests(row: dict[str, Any]) -> str:
    """Store requests per document, by HTTP method where counted: ``2.00 (HEAD 1.00, PUT 1.00)``."""
    methods = row.get("store_methods_per_doc") or {}
    detail = ", ".join(f"{m} {n:.2f}" for m, n in sorted(methods.items()))
    return _num(row["store_requests_per_doc"], 2) + (f" ({detail})" if detail else "")


def section(b5: dict[str, Any]) -> list[str]:
    """The "## B5" section of RESULTS.md."""
    load = ", ".join(f"{k}: {v}" for k, v in b5["load"].items())
    mean = b5["bytes"] / max(b5["documents"], 1) / 1e3
    out = [
        "## B5: many small documents to each store",
        "",
        f"{b5['documents']} documents (sizes 50 KB - 2 MB, mean {mean:.0f} KB, deterministic) of one emulator "
        "execution (the emulator in its own process) written to each store, by ours "
        "(`transfer.download_all`: `in_parallel` + `hook.download_document` on a `HookPool`, the download "
        "operator's and the batch's code) and by the reference (one GET of each document with a "
        "`requests.Session` per thread, then the store's own client: boto3 `put_object`, azure-storage-blob "
        "`upload_blob`, google-cloud-storage `upload_from_string`, a plain file write), at the same concurrency, "
        "each run in its own process, one run each. *Requests/doc*: HTTP requests to the store (counted in "
        "the process at `urllib3` and `aiohttp`, by the store's port and HTTP method; retries count) and to Smart Flows "
        "(the emulator's request log, the set-up's warm-up request excluded). *CPU-s/doc*: the process's "
        "user + system time over the transfer (all threads). *Own RSS*: peak minus before (peak reset "
        "after set-up). Every object was read back and checked (size and sha256 against the emulator's). "
        f"The machine is shared (2 cores, other agents working): load averages (1/5/15 min) {load}.",
        "",
        "| store | concurrency | how | docs/s | ratio | store req/doc | Smart Flows req/doc | CPU-ms/doc | own RSS MiB | verified |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for kind in b5["stores"]:
        for concurrency in b5["concurrencies"]:
            ref = _find(b5, kind, concurrency, "reference")
            for how in HOWS:
                row = _find(b5, kind, concurrency, how)
                if not row:
                    continue
                ratio = row["docs_per_s"] / ref["docs_per_s"] if ref else float("nan")
                out.append(
                    f"| {kind} | {concurrency} | {how} | {row['docs_per_s']:.1f} | {ratio:.2f} | "
                    f"{_requests(row)} | {row['smartflows_requests_per_doc']:.2f} | "
                    f"{row['cpu_s_per_doc'] * 1000:.1f} | {row['own_rss_mib']:.1f} | {row['verified']} |"
                )
    out += ["", "Targets:", ""]
    for kind in b5["stores"]:
        for concurrency in b5["concurrencies"]:
            ours, ref = _find(b5, kind, concurrency, "ours"), _find(b5, kind, concurrency, "reference")
            if ours and ref:
                ratio = ours["docs_per_s"] / ref["docs_per_s"]
                verdict = "**met**" if ratio >= TARGET_RATIO else "**missed**"
                out.append(
                    f"- {kind} x{concurrency}: ours {ratio:.0%} of the reference (target ≥ {TARGET_RATIO:.0%}) {verdict}"
                )
    out += [f"- {note}" for note in b5["notes"]]
    if b5.get("before"):
        out += ["", *_before_after(b5["before"], b5)]
    return [*out, ""]


def _before_after(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """Ours before and after a change (``--before`` a JSON of an earlier run), same table shape."""
    out = [
        f"Before / after (ours; before: {before['documents']} documents, "
        f"load {before['load'].get('start', '?')} at its start; {before.get('label', '')}):",
        "",
        "| store | concurrency | docs/s before → after | ratio before → after | store req/doc before → after | CPU-ms/doc before → after |",
        "|---|---|---|---|---|---|",
    ]
    for kind in after["stores"]:
        for concurrency in after["concurrencies"]:
            pairs = [
                (_find(run, kind, concurrency, "ours"), _find(run, kind, concurrency, "reference"))
                for run in (before, after)
            ]
            if not all(ours and ref for ours, ref in pairs):
                continue
            (b, b_ref), (a, a_ref) = pairs
            out.append(
                f"| {kind} | {concurrency} | {b['docs_per_s']:.1f} → {a['docs_per_s']:.1f} | "
                f"{b['docs_per_s'] / b_ref['docs_per_s']:.2f} → {a['docs_per_s'] / a_ref['docs_per_s']:.2f} | "
                f"{_requests(b)} → {_requests(a)} | "
                f"{b['cpu_s_per_doc'] * 1000:.1f} → {a['cpu_s_per_doc'] * 1000:.1f} |"
            )
    return out


def main(argv: list[str]) -> None:
    if argv and argv[0] == "child":
        child(argv[1:])
        return
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--documents", type=int, default=2000)
    p.add_argument("--stores", default=",".join(STORES))
    p.add_argument("--concurrencies", default=",".join(map(str, CONCURRENCIES)))
    p.add_argument("--out", type=Path, default=None, help="JSON of the raw results")
    p.add_argument("--results", type=Path, default=None, help="RESULTS.md whose B5 section to rewrite")
    p.add_argument("--before", type=Path, default=None, help="JSON (--out) of an earlier run to compare with")
    p.add_argument("--before-label", default="", help="what the earlier run measured (a commit, say)")
    args = p.parse_args(argv)
    conc = tuple(int(c) for c in args.concurrencies.split(","))
    with tempfile.TemporaryDirectory(prefix="bench-b5-") as tmp:
        result = run(args.documents, Path(tmp), tuple(args.stores.split(",")), conc)
    if args.before:
        result["before"] = {**json.loads(args.before.read_text()), "label": args.before_label}
    text = json.dumps(result, indent=1)
    if args.out:
        args.out.write_text(text)
    if args.results:
        replace_section(args.results, section(result), "## B5", before="## Profile")
    if not args.out and not args.results:
        print(text)


if __name__ == "__main__":
    main(sys.argv[1:])

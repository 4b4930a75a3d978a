"""B3: one large document streamed by the emulator to each store, ours beside the plain clients.

Per size (64 MiB, 1 GiB) and run, the same emulator URL over loopback is written, each download in
its own process, by:
- ``file``:  ours (``SmartFlowsHook.download_document`` to ``file://``) | ``curl -sS -o FILE``;
- ``s3``:    ours to ``s3://`` on a moto server | ``boto3 upload_fileobj`` of the HTTP response stream
             | ``s3fs put`` of a local copy (the copy made beforehand, untimed: put alone);
- ``azure``: ours to ``abfs://`` on Azurite | ``azure-storage-blob upload_blob`` of the stream;
- ``gcs``:   ours to ``gs://`` on gcp-storage-emulator | ``google-cloud-storage upload_from_file``
             of the stream (``gcsfs put`` of a local copy when google-cloud-storage is absent).
Every process resets its peak RSS (``/proc/self/clear_refs``) after imports and set-up, so
*own RSS* is what the download itself added. Throughput is bytes / seconds of the transfer call
(MB = 10^6 bytes). The reference of each store is its fastest plain client (median MB/s).

``--gcs-chunk-mib N`` gives both GCS contenders the same resumable chunk (ours' ``block_size``, the
SDK's ``chunk_size``; default: each its own, 8 MiB and 100 MiB).

``python -m benchmarks.b3_downloads [--repeats N] [--small] [--stores file,s3,azure,gcs]
[--gcs-chunk-mib N] [--results benchmarks/RESULTS.md]`` runs it alone: it rewrites only the "## B3" section of
RESULTS.md and the charts ``b3_<store>.png``; ``benchmarks/run.py`` calls :func:`run`, and
``benchmarks.b3_report``'s ``section`` and ``charts``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import (
    ROOT,
    Emulator,
    free_port,
    loadavg,
    log,
    replace_section,
    stop_group,
    summary,
)
from tests.support.processes import start_group, wait_listening

SIZES = {"64 MiB": 64 * 2**20, "1 GiB": 2**30}
STORES = ("file", "s3", "azure", "gcs")
AZURITE = ROOT / ".cache" / "azurite" / "node_modules" / ".bin" / "azurite-blob"
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
BUCKET = "bench"


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


# --- children: one transfer each, in its own process ------------------------------------------------


def _status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return 0


def _measure(transfer: Any) -> None:
    """Run ``transfer()`` (returns bytes written, sha256 or None) and print the JSON report."""
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS: the set-up's peak is not counted
    before = _status("VmRSS")
    start = time.perf_counter()
    size, sha256 = transfer()
    seconds = time.perf_counter() - start
    report = {
        "seconds": seconds,
        "size": size,
        "sha256": sha256,
        "rss_before": before,
        "rss_peak": _status("VmHWM"),
    }
    print(json.dumps(report))


def _attach_gcs() -> None:
    endpoint = os.environ.get("B3_GCS_ENDPOINT")
    if endpoint:
        from airflow.sdk.io import attach
        from gcsfs.core import GCSFileSystem

        fs = GCSFileSystem(endpoint_url=endpoint, token="anon", project="bench", skip_instance_cache=True)
        attach("gs", conn_id="gcs_bench", fs=fs)


def child_ours(argv: list[str]) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--doc", required=True)
    p.add_argument("--dest", required=True)
    p.add_argument("--conn", default=None)
    args = p.parse_args(argv)
    from airflow_provider_smartflows.hooks.smartflows import SmartFlowsHook
    from airflow_provider_smartflows.storage import check_destination, object_path

    _attach_gcs()
    hook = SmartFlowsHook("smartflows_bench")
    hook.get_document(args.doc)  # connection, session and first request out of the timed part
    target = object_path(args.dest, args.conn)
    check_destination(target)  # the store's client set-up, out of the timed part

    chunk = os.environ.get("B3_GCS_CHUNK")
    block_size = int(chunk) if chunk and args.dest.startswith("gs://") else None

    def transfer() -> tuple[int, str]:
        done = hook.download_document(
            args.doc, target, conn_id=args.conn, overwrite=True, block_size=block_size
        )
        return done.size, done.sha256

    _measure(transfer)


def child_sdk(argv: list[str]) -> None:
    """The store's own SDK uploading the HTTP response stream (or a local copy, for ``*-put``)."""
    p = argparse.ArgumentParser()
    p.add_argument("--how", required=True)
    p.add_argument("--url", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--local", default=None)
    args = p.parse_args(argv)
    import requests

    headers = {"X-API-Key": os.environ["B3_API_KEY"], "Accept-Encoding": "identity"}
    upload = _sdk_uploader(args.how, args.key)
    session = requests.Session()
    session.get(args.url.rsplit("/content", 1)[0], headers=headers).raise_for_status()  # warm connection

    def transfer() -> tuple[int, None]:
        if args.local:
            upload(args.local, os.path.getsize(args.local))
            return os.path.getsize(args.local), None
        with session.get(args.url, headers=headers, stream=True) as response:
            response.raise_for_status()
            size = int(response.headers["Content-Length"])
            upload(response.raw, size)
        return size, None

    _measure(transfer)


def _sdk_uploader(how: str, key: str) -> Any:
    if how == "boto3-stream":
        import boto3
        from botocore.config import Config

        config = Config(read_timeout=600)  # as for ours: moto's completion of 1 GiB is slow
        s3 = boto3.client(
            "s3", endpoint_url=os.environ["B3_S3_ENDPOINT"], region_name="us-east-1", config=config
        )
        s3.head_bucket(Bucket=BUCKET)
        return lambda stream, size: s3.upload_fileobj(stream, BUCKET, key)
    if how == "s3fs-put":
        import s3fs

        fs = s3fs.S3FileSystem(endpoint_url=os.environ["B3_S3_ENDPOINT"], config_kwargs={"read_timeout": 600})
        fs.ls(BUCKET)
        return lambda local, size: fs.put_file(local, f"{BUCKET}/{key}")
    if how == "azure-sdk-stream":
        from azure.storage.blob import BlobServiceClient

        service = BlobServiceClient.from_connection_string(os.environ["B3_AZURE_CONNECTION_STRING"])
        blob = service.get_blob_client(BUCKET, key)
        service.get_container_client(BUCKET).get_container_properties()
        return lambda stream, size: blob.upload_blob(stream, length=size, overwrite=True)
    if how == "gcs-sdk-stream":
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage

        client = storage.Client(
            project="bench",
            credentials=AnonymousCredentials(),
            client_options={"api_endpoint": os.environ["B3_GCS_ENDPOINT"]},
        )
        chunk = os.environ.get("B3_GCS_CHUNK")
        blob = client.bucket(BUCKET).blob(key, chunk_size=int(chunk) if chunk else None)
        client.get_bucket(BUCKET)
        return lambda stream, size: blob.upload_from_file(stream, size=size)
    if how == "gcsfs-put":
        from gcsfs.core import GCSFileSystem

        fs = GCSFileSystem(endpoint_url=os.environ["B3_GCS_ENDPOINT"], token="anon", project="bench")
        fs.ls(BUCKET)
        return lambda local, size: fs.put_file(local, f"{BUCKET}/{key}")
    raise ValueError(how)


# --- servers ----------------------------------------------------------------------------------------


class Server:
    """A store emulator on 127.0.0.1 in its own process group, stopped by PID."""

    def __init__(self, name: str, args: list[str], port: int, cwd: Path | None = None) -> None:
        self.name, self.port, self.url = name, port, f"http://127.0.0.1:{port}"
        self.proc = start_group(args, cwd=cwd)
        try:
            wait_listening(port, self.proc, name)
        except (AssertionError, RuntimeError) as error:
            self.stop()
            raise RuntimeError(f"{name} did not start") from error

    def stop(self) -> None:
        stop_group(self.proc, grace=10)


def _start_store(kind: str, work: Path, env: dict[str, str]) -> Server | None:
    """Start the store's emulator, create the bucket/container, set the connection variables."""
    port = free_port()
    bin_dir = os.path.dirname(sys.executable)
    if kind == "s3":
        import boto3

        server = Server("moto", [f"{bin_dir}/moto_server", "-H", "127.0.0.1", "-p", str(port)], port)
        # moto joins the parts in memory when a multipart upload completes: for 1 GiB on a loaded
        # machine that outlasts s3fs's 15 s read timeout, and the retried completion finds no upload.
        extra = {
            "endpoint_url": server.url,
            "region_name": "us-east-1",
            "config_kwargs": {"read_timeout": 600},
        }
        conn = {"conn_type": "aws", "login": "testing", "password": "testing", "extra": extra}
        env.update(AIRFLOW_CONN_AWS_BENCH=json.dumps(conn), B3_S3_ENDPOINT=server.url)
        env.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing")
        boto3.client(
            "s3",
            endpoint_url=server.url,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        ).create_bucket(Bucket=BUCKET)
        return server
    if kind == "azure":
        from azure.storage.blob import BlobServiceClient

        args = [str(AZURITE), "--blobHost", "127.0.0.1", "--blobPort", str(port), "--inMemoryPersistence"]
        server = Server("azurite", [*args, "--skipApiVersionCheck", "--loose", "--silent"], port, cwd=work)
        cs = (
            "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
            f"AccountKey={AZURITE_KEY};BlobEndpoint={server.url}/devstoreaccount1;"
        )
        conn = {"conn_type": "wasb", "extra": {"connection_string": cs}}
        env.update(AIRFLOW_CONN_WASB_BENCH=json.dumps(conn), B3_AZURE_CONNECTION_STRING=cs)
        BlobServiceClient.from_connection_string(cs).create_container(BUCKET)
        return server
    if kind == "gcs":
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage

        args = [f"{bin_dir}/gcp-storage-emulator", "start", "--host", "127.0.0.1", "--port", str(port)]
        server = Server("gcp-storage-emulator", [*args, "--in-memory", "--quiet"], port)
        env.update(B3_GCS_ENDPOINT=server.url)
        storage.Client(
            project="bench", credentials=AnonymousCredentials(), client_options={"api_endpoint": server.url}
        ).create_bucket(BUCKET)
        return server
    return None


def _available(kind: str) -> str | None:
    """Why ``kind`` cannot run here (None when it can)."""
    bin_dir = Path(sys.executable).parent
    if kind == "s3" and not (bin_dir / "moto_server").exists():
        return "moto_server is not installed"
    if kind == "azure" and (not AZURITE.exists() or shutil.which("node") is None):
        return "Azurite is not installed (scripts/install_storage_emulators.sh)"
    if kind == "gcs" and not (bin_dir / "gcp-storage-emulator").exists():
        return "gcp-storage-emulator is not installed (scripts/install_storage_emulators.sh)"
    return None


class Stores:
    """Parent-side SDK clients: the size of what a contender stored, and its removal."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env

    def size_and_remove(self, kind: str, key: str, work: Path) -> int:
        if kind == "file":
            path = work / key
            size = path.stat().st_size
            path.unlink()
            return size
        if kind == "s3":
            import boto3

            s3 = boto3.client(
                "s3",
                endpoint_url=self.env["B3_S3_ENDPOINT"],
                region_name="us-east-1",
                aws_access_key_id="testing",
                aws_secret_access_key="testing",
            )
            size = int(s3.head_object(Bucket=BUCKET, Key=key)["ContentLength"])
            s3.delete_object(Bucket=BUCKET, Key=key)
            return size
        if kind == "azure":
            from azure.storage.blob import BlobServiceClient

            cs = self.env["B3_AZURE_CONNECTION_STRING"]
            blob = BlobServiceClient.from_connection_string(cs).get_blob_client(BUCKET, key)
            size = int(blob.get_blob_properties().size)
            blob.delete_blob()
            return size
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage

        client = storage.Client(
            project="bench",
            credentials=AnonymousCredentials(),
            client_options={"api_endpoint": self.env["B3_GCS_ENDPOINT"]},
        )
        blob = client.bucket(BUCKET).get_blob(key)
        size = int(blob.size)
        blob.delete()
        return size


def contenders(kind: str) -> list[str]:
    """The plain clients of a store (ours is always measured too)."""
    if kind == "file":
        return ["curl"]
    if kind == "s3":
        return ["boto3-stream", "s3fs-put"]
    if kind == "azure":
        return ["azure-sdk-stream"]
    try:
        import google.cloud.storage  # noqa: F401
    except ImportError:
        return ["gcsfs-put"]
    return ["gcs-sdk-stream"]


def _destination(kind: str, key: str, work: Path) -> tuple[str, str | None]:
    if kind == "file":
        return f"file://{work / key}", None
    if kind == "s3":
        return f"s3://{BUCKET}/{key}", "aws_bench"
    if kind == "azure":
        return f"abfs://{BUCKET}/{key}", "wasb_bench"
    return f"gs://gcs_bench@{BUCKET}/{key}", None


def _one(
    kind: str, how: str, doc: str, url: str, key: str, work: Path, env: dict[str, str]
) -> dict[str, Any]:
    me = [sys.executable, "-m", "benchmarks.b3_downloads"]
    if how == "ours":
        dest, conn = _destination(kind, key, work)
        return _report(
            [*me, "child-ours", "--doc", doc, "--dest", dest, *(["--conn", conn] if conn else [])], env
        )
    if how == "curl":
        start = time.perf_counter()
        out = work / key
        subprocess.run(
            ["curl", "-sS", "--fail", "-o", str(out), "-H", f"X-API-Key: {env['B3_API_KEY']}", url],
            check=True,
            env=env,
        )
        return {"seconds": time.perf_counter() - start, "sha256": None, "own_rss_mib": float("nan")}
    local = ["--local", str(work / "local-copy.pdf")] if how.endswith("-put") else []
    return _report([*me, "child-sdk", "--how", how, "--url", url, "--key", key, *local], env)


def _report(args: list[str], env: dict[str, str]) -> dict[str, Any]:
    proc = subprocess.run(args, capture_output=True, text=True, env=env, cwd=ROOT, timeout=1800, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{args[3:6]} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    data = json.loads(proc.stdout.strip().splitlines()[-1])
    data["own_rss_mib"] = (data["rss_peak"] - data["rss_before"]) / 2**20
    return data


def run(sizes: dict[str, int], repeats: int, work: Path, stores: tuple[str, ...] = STORES) -> dict[str, Any]:
    """Every store and contender, per size and repeat, interleaved (same load for all)."""
    logging.getLogger("azure").setLevel(logging.WARNING)  # the SDK logs every request at INFO
    work.mkdir(parents=True, exist_ok=True)
    scen = work / "b3-scenario.json"
    scen.write_text(json.dumps(scenario(sizes)))
    notes, raw, servers = [], [], []
    if os.environ.get("B3_GCS_CHUNK") and "gcs" in stores:
        notes.append(
            f"gcs: both contenders send resumable chunks of {int(os.environ['B3_GCS_CHUNK']) >> 20} MiB"
        )
    loads = {"start": loadavg()}
    env = {**os.environ, "AIRFLOW_HOME": str(work / "airflow-home"), "PYTHONPATH": str(ROOT)}
    env["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
    env["GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT"] = "false"
    active = []
    for kind in stores:
        reason = _available(kind)
        if reason:
            notes.append(f"{kind}: not measured ({reason})")
            continue
        server = _start_store(kind, work, env)
        if server:
            servers.append(server)
        active.append(kind)
    checker = Stores(env)
    try:
        with Emulator(work, scenario=scen, speedup=1.0) as emu:
            env.update(AIRFLOW_CONN_SMARTFLOWS_BENCH=json.dumps(emu.connection()), B3_API_KEY=emu.api_key)
            for label, size in sizes.items():
                ex = emu.api("POST", "/flows/executions", params={"flowId": f"b3-{size}"})
                time.sleep(0.1)
                doc = next(e for e in emu.admin("GET", "/_emulator/executions") if e["id"] == ex["id"])[
                    "documents"
                ][0]
                expected = emu.admin("GET", f"/_emulator/documents/{doc}/sha256")["sha256"]
                url = f"{emu.base_url}/api/v1/documents/{doc}/content"
                subprocess.run(  # the local copy that the "*-put" contenders upload (untimed)
                    [
                        "curl",
                        "-sS",
                        "--fail",
                        "-o",
                        str(work / "local-copy.pdf"),
                        "-H",
                        f"X-API-Key: {emu.api_key}",
                        url,
                    ],
                    check=True,
                )
                for rep in range(repeats):
                    for kind in active:
                        for how in ["ours", *contenders(kind)]:
                            key = f"{rep}-{how}-{size}.pdf"
                            log(f"B3 {label} run {rep + 1}/{repeats}: {kind} {how}")
                            data = _one(kind, how, doc, url, key, work, env)
                            stored = checker.size_and_remove(kind, key, work)
                            ok = stored == size and data.get("sha256") in (None, expected)
                            row = {
                                "size_label": label,
                                "size": size,
                                "store": kind,
                                "how": how,
                                "seconds": data["seconds"],
                                "mb_per_s": size / 1e6 / data["seconds"],
                                "own_rss_mib": data["own_rss_mib"],
                                "peak_rss_mib": data.get("rss_peak", float("nan")) / 2**20,
                                "verified": ok,
                            }
                            log(
                                f"   {row['mb_per_s']:.0f} MB/s, own RSS {row['own_rss_mib']:.1f} MiB, verified {ok}"
                            )
                            raw.append(row)
                loads[f"after {label}"] = loadavg()
    finally:
        for server in servers:
            server.stop()
    loads["end"] = loadavg()
    table: dict[str, Any] = {}
    for row in raw:
        table.setdefault(f"{row['size_label']}/{row['store']}/{row['how']}", []).append(row)
    cells = {
        name: {
            "mb_per_s": summary([r["mb_per_s"] for r in rows]),
            "own_rss_mib": summary([r["own_rss_mib"] for r in rows]) if rows[0]["how"] != "curl" else None,
            "verified": all(r["verified"] for r in rows),
            "runs": len(rows),
        }
        for name, rows in table.items()
    }
    return {
        "sizes": sizes,
        "repeats": repeats,
        "stores": active,
        "table": cells,
        "raw": raw,
        "notes": notes,
        "load": loads,
    }


def main(argv: list[str]) -> None:
    if argv and argv[0] == "child-ours":
        child_ours(argv[1:])
        return
    if argv and argv[0] == "child-sdk":
        child_sdk(argv[1:])
        return
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--small", action="store_true", help="4 MiB and 1 MiB (smoke)")
    p.add_argument("--stores", default=",".join(STORES))
    p.add_argument("--out", type=Path, default=None, help="JSON of the raw results")
    p.add_argument(
        "--gcs-chunk-mib", type=int, default=None, help="one resumable chunk size for both GCS contenders"
    )
    p.add_argument("--results", type=Path, default=None, help="RESULTS.md whose B3 section to rewrite")
    args = p.parse_args(argv)
    sizes = {"1 MiB": 2**20, "4 MiB": 4 * 2**20} if args.small else SIZES
    if args.gcs_chunk_mib:
        os.environ["B3_GCS_CHUNK"] = str(args.gcs_chunk_mib * 2**20)  # the children inherit it
    with tempfile.TemporaryDirectory(prefix="bench-b3-") as tmp:
        result = run(sizes, args.repeats, Path(tmp), tuple(args.stores.split(",")))
    if args.gcs_chunk_mib and "gcs" in result["stores"]:
        result["notes"].append(f"gcs: both contenders send resumable chunks of {args.gcs_chunk_mib} MiB")
    text = json.dumps(result, indent=1)
    if args.out:
        args.out.write_text(text)
    if args.results:
        from benchmarks.b3_report import charts, section

        charts(result, args.results.parent)
        replace_section(args.results, section(result), "## B3")
    if not args.out and not args.results:
        print(text)


if __name__ == "__main__":
    main(sys.argv[1:])

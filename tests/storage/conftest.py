"""Store fixtures: Azurite (Azure Blob) and a GCS emulator, each a server on 127.0.0.1 in its own
process group, stopped by PID (``tests.support.processes.serving``); S3 is the session moto
server of tests/conftest.py.

``store`` is parametrised over file, s3, gcs and azure: each test gets an empty bucket/container
of its own and the Airflow connection to it (environment variables), removed afterwards.
Missing emulators skip their store's tests (scripts/install_storage_emulators.sh installs them)."""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from airflow_provider_smartflows.hooks.smartflows import SmartFlowsHook
from tests.storage.stores import (
    GCS_CONN_ID,
    GCS_ENDPOINT_VARIABLE,
    Store,
    attach_gcs,
    azurite_connection_string,
    connection_env,
)
from tests.support.processes import free_port, serving

if TYPE_CHECKING:
    from collections.abc import Iterator

ROOT = Path(__file__).resolve().parents[2]
AZURITE = ROOT / ".cache" / "azurite" / "node_modules" / ".bin" / "azurite-blob"
STORES = ["file", "s3", "gcs", "azure"]


@pytest.fixture(scope="session")
def azurite_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if not AZURITE.exists() or shutil.which("node") is None:
        pytest.skip("Azurite is not installed: run scripts/install_storage_emulators.sh")
    pytest.importorskip("adlfs")
    pytest.importorskip("airflow.providers.microsoft.azure")
    port = free_port()
    work = tmp_path_factory.mktemp("azurite")
    args = [str(AZURITE), "--blobHost", "127.0.0.1", "--blobPort", str(port), "--inMemoryPersistence"]
    args += ["--skipApiVersionCheck", "--loose", "--silent"]
    # In memory, nothing to save: Azurite waits for its clients' idle keep-alive connections on
    # SIGTERM (10 s of every worker's teardown in `make unit`), so it gets 2 s before SIGKILL.
    with serving("azurite-blob", args, port, cwd=str(work), grace=2.0) as url:
        yield url


@pytest.fixture(scope="session")
def gcs_endpoint() -> Iterator[str]:
    pytest.importorskip("gcsfs")
    executable = shutil.which("gcp-storage-emulator", path=os.path.dirname(sys.executable))
    if executable is None:
        pytest.skip("gcp-storage-emulator is not installed: run scripts/install_storage_emulators.sh")
    port = free_port()
    args = [executable, "start", "--host", "127.0.0.1", "--port", str(port), "--in-memory", "--quiet"]
    with serving("gcp-storage-emulator", args, port) as url:
        yield url


def _apply(patch: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    for name, value in env.items():
        patch.setenv(name, value)


@contextlib.contextmanager
def _s3_store(request: pytest.FixtureRequest, patch: pytest.MonkeyPatch, bucket: str) -> Iterator[Store]:
    moto_bucket = request.getfixturevalue("moto_bucket")
    moto_endpoint = request.getfixturevalue("moto_endpoint")
    conn_id = "aws_storage_test"
    with moto_bucket(patch, conn_id, bucket) as s3:
        env = {k: v for k, v in os.environ.items() if k.startswith(("AIRFLOW_CONN_AWS", "AWS_"))}
        yield Store("s3", bucket, f"s3://{conn_id}@{bucket}", s3, env)
        for upload in s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []):
            s3.abort_multipart_upload(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])
    assert moto_endpoint


@contextlib.contextmanager
def _azure_store(request: pytest.FixtureRequest, patch: pytest.MonkeyPatch, bucket: str) -> Iterator[Store]:
    # The storage extra may be absent (the 3.0 line tests without it): skip, never fail.
    pytest.importorskip("azure.storage.blob", reason="the azure store needs the storage extra")
    from azure.storage.blob import BlobServiceClient

    connection_string = azurite_connection_string(request.getfixturevalue("azurite_endpoint"))
    conn_id = "wasb_storage_test"
    env = connection_env(conn_id, {"conn_type": "wasb", "extra": {"connection_string": connection_string}})
    _apply(patch, env)
    client = BlobServiceClient.from_connection_string(connection_string)
    client.create_container(bucket)
    try:
        yield Store("azure", bucket, f"abfs://{bucket}", client, env, conn_id)
    finally:
        client.delete_container(bucket)
        client.close()


@contextlib.contextmanager
def _gcs_store(request: pytest.FixtureRequest, patch: pytest.MonkeyPatch, bucket: str) -> Iterator[Store]:
    pytest.importorskip("google.auth", reason="the gcs store needs the storage extra")
    pytest.importorskip("google.cloud.storage", reason="the gcs store needs the storage extra")
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    endpoint = request.getfixturevalue("gcs_endpoint")
    attach_gcs(endpoint)
    client = storage.Client(
        project="test", credentials=AnonymousCredentials(), client_options={"api_endpoint": endpoint}
    )
    client.create_bucket(bucket)
    try:
        yield Store("gcs", bucket, f"gs://{GCS_CONN_ID}@{bucket}", client, {GCS_ENDPOINT_VARIABLE: endpoint})
    finally:
        from google.api_core.exceptions import Conflict

        # The emulator refuses to delete a bucket with an open (never finalised) upload session;
        # the bucket is unique to the test and the emulator's memory goes with the session.
        with contextlib.suppress(Conflict):
            client.bucket(bucket).delete(force=True)


@pytest.fixture(params=STORES)
def store(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Store]:
    """An empty bucket/container (file: folder) on one store, reached through Airflow."""
    bucket = f"sf-{uuid.uuid4().hex[:12]}"
    kind = request.param
    if kind == "file":
        folder = tmp_path / bucket
        folder.mkdir()
        yield Store("file", bucket, f"file://{folder}")
        return
    factory = {"s3": _s3_store, "azure": _azure_store, "gcs": _gcs_store}[kind]
    with factory(request, monkeypatch, bucket) as value:
        yield value


@pytest.fixture
def hook(smartflows_conn: str) -> Iterator[SmartFlowsHook]:
    """A sync hook on the emulator's connection, with short retries (the storage tests' downloads)."""
    sync_hook = SmartFlowsHook(smartflows_conn, timeout=10, retry_limit=2, retry_delay=0.01)
    try:
        yield sync_hook
    finally:
        sync_hook.close()

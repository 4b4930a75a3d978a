"""The emulated stores of the storage tests: how to reach each one through Airflow (connection or
attached filesystem) and how to look at it with the store's own SDK, independently of fsspec.

Importable by the test subprocesses too (tests/storage/writer_child.py), which rebuild the same
Airflow set-up from the environment variables that :meth:`Store.env` returns."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

AZURITE_ACCOUNT = "devstoreaccount1"
# Azurite's well-known development key (public, documented by Microsoft; not a secret).
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
GCS_CONN_ID = "gcs_storage_test"
GCS_ENDPOINT_VARIABLE = "SMARTFLOWS_TEST_GCS_ENDPOINT"


def azurite_connection_string(endpoint: str) -> str:
    return (
        f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};"
        f"BlobEndpoint={endpoint}/{AZURITE_ACCOUNT};"
    )


def attach_gcs(endpoint: str, conn_id: str = GCS_CONN_ID) -> None:
    """Attach a gcsfs filesystem on the emulator to ``gs://<conn_id>@...`` paths.

    Without the Google provider (see README) ObjectStoragePath has no ``gs`` filesystem of its own;
    Airflow's ``attach`` registers one under the connection id. ``gcsfs.core.GCSFileSystem`` is the
    plain class: the one ``gcsfs`` exports by default probes every bucket's type over gRPC, which
    an emulator never answers (set GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT=false to turn that off).
    """
    try:
        from airflow.sdk.io import attach
    except ImportError:  # Airflow 2
        from airflow.io.store import attach

    fs = emulator_gcs_filesystem()(
        endpoint_url=endpoint, token="anon", project="test", skip_instance_cache=True
    )
    attach("gs", conn_id=conn_id, fs=fs)
    attach("gcs", conn_id=conn_id, fs=fs)


def emulator_gcs_filesystem() -> type:
    """``gcsfs.core.GCSFileSystem`` making one attempt per request instead of six.

    The emulator answers 501 to cancelling a resumable upload (real GCS answers 499, which gcsfs
    takes as done); gcsfs counts 501 as transient and retries it with back-off, about 31 s per
    aborted write. Its retry count is fixed when the class is defined (``@retry_request(retries=6)``
    on ``_request``), with no option or attribute for it, hence the subclass: same request code,
    wrapped in gcsfs's own retry decorator with ``retries=1``."""
    from gcsfs.core import GCSFileSystem
    from gcsfs.retry import retry_request

    class EmulatorGCSFileSystem(GCSFileSystem):
        _request = retry_request(retries=1)(GCSFileSystem._request.__wrapped__)

    return EmulatorGCSFileSystem


def setup_from_env() -> None:
    """In a subprocess: the GCS filesystem, if the parent test uses GCS (connections come as
    AIRFLOW_CONN_* variables)."""
    endpoint = os.environ.get(GCS_ENDPOINT_VARIABLE)
    if endpoint:
        attach_gcs(endpoint)


@dataclass
class Store:
    """One store kind under test: ``uri(key)`` for the writer, SDK look-ups for the assertions."""

    kind: str
    bucket: str
    prefix: str  # URI of the bucket root with its connection, e.g. "s3://aws_storage_test@b"
    client: Any = None
    env: dict[str, str] = field(default_factory=dict)
    conn_id: str | None = None  # given apart from the URI (abfs URIs have no room for it)

    def uri(self, key: str, bucket: str | None = None) -> str:
        if bucket is not None:
            return self.prefix.replace(self.bucket, bucket, 1) + "/" + key
        return f"{self.prefix}/{key}"

    def path(self, key: str, bucket: str | None = None) -> Any:
        from airflow.providers.common.compat.sdk import ObjectStoragePath

        options = {"conn_id": self.conn_id} if self.conn_id else {}
        return ObjectStoragePath(self.uri(key, bucket), **options)

    def child_args(self, key: str) -> list[str]:
        """writer_child's arguments for the object ``key``."""
        return [self.uri(key)] + (["--conn-id", self.conn_id] if self.conn_id else [])

    # --- look-ups with the store's own SDK -------------------------------------------------------
    def keys(self) -> list[str]:
        if self.kind == "file":
            root = self.prefix[len("file://") :]
            return sorted(
                os.path.relpath(os.path.join(d, f), root) for d, _, files in os.walk(root) for f in files
            )
        if self.kind == "s3":
            return sorted(
                o["Key"] for o in self.client.list_objects_v2(Bucket=self.bucket).get("Contents", [])
            )
        if self.kind == "azure":
            return sorted(b.name for b in self.client.get_container_client(self.bucket).list_blobs())
        return sorted(b.name for b in self.client.bucket(self.bucket).list_blobs())

    def read(self, key: str) -> bytes:
        if self.kind == "file":
            with open(os.path.join(self.prefix[len("file://") :], key), "rb") as f:
                return f.read()
        if self.kind == "s3":
            return self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        if self.kind == "azure":
            return self.client.get_blob_client(self.bucket, key).download_blob().readall()
        return self.client.bucket(self.bucket).blob(key).download_as_bytes()

    def metadata(self, key: str) -> dict[str, str]:
        """User metadata, plus the S3 object tags (where the sha256 goes on S3)."""
        if self.kind == "file":
            return {}
        if self.kind == "s3":
            head = self.client.head_object(Bucket=self.bucket, Key=key)
            tags = self.client.get_object_tagging(Bucket=self.bucket, Key=key)["TagSet"]
            return {**head["Metadata"], **{t["Key"]: t["Value"] for t in tags}}
        if self.kind == "azure":
            return dict(self.client.get_blob_client(self.bucket, key).get_blob_properties().metadata)
        blob = self.client.bucket(self.bucket).get_blob(key)
        return dict(blob.metadata or {})

    def content_type(self, key: str) -> str | None:
        """The object's content type as the store keeps it (None for local files)."""
        if self.kind == "file":
            return None
        if self.kind == "s3":
            return str(self.client.head_object(Bucket=self.bucket, Key=key)["ContentType"])
        if self.kind == "azure":
            properties = self.client.get_blob_client(self.bucket, key).get_blob_properties()
            return str(properties.content_settings.content_type)
        return str(self.client.bucket(self.bucket).get_blob(key).content_type)

    def pending_uploads(self) -> int:
        """Uploads begun but never committed (S3 multipart uploads; Azure uncommitted blobs)."""
        if self.kind == "s3":
            return len(self.client.list_multipart_uploads(Bucket=self.bucket).get("Uploads", []))
        if self.kind == "azure":
            container = self.client.get_container_client(self.bucket)
            blobs = container.list_blobs(include=["uncommittedblobs"])
            return sum(1 for b in blobs if b.size == 0 or not b.etag)
        return 0

    def buckets(self) -> list[str]:
        if self.kind == "s3":
            return sorted(b["Name"] for b in self.client.list_buckets()["Buckets"])
        if self.kind == "azure":
            return sorted(c.name for c in self.client.list_containers())
        if self.kind == "gcs":
            return sorted(b.name for b in self.client.list_buckets())
        return []


def connection_env(conn_id: str, connection: dict[str, Any]) -> dict[str, str]:
    return {f"AIRFLOW_CONN_{conn_id.upper()}": json.dumps(connection)}

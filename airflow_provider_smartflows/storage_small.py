"""The per-document shortcuts of :mod:`airflow_provider_smartflows.storage` for many small documents:
a bucket seen to exist is not probed again for a minute (:func:`bucket_exists`), and an object
smaller than one block goes up in one request at the commit (S3 ``PutObject``, Azure ``Put Blob``,
GCS ``uploadType=multipart``) with its metadata, sha256 and, without overwrite, the store's
create-only condition (``If-None-Match: *``, ``ifGenerationMatch=0``); from one block on, the
store's atomic block writer of :mod:`~airflow_provider_smartflows.storage_large` takes over (S3
multipart, Azure block list, GCS resumable upload, several blocks in flight). Nothing is sent before
the commit or the first block, so memory stays one block and an abort leaves nothing."""

from __future__ import annotations

import time
from typing import Any

from fsspec.asyn import sync

from airflow_provider_smartflows.storage import SHA256_KEY, AtomicWriter, _LocalWriter, _split
from airflow_provider_smartflows.storage_large import AzureBlocksWriter, GcsChunksWriter, S3PartsWriter

#: Seconds a bucket seen to exist is not probed again (per filesystem): a missing one is never
#: remembered, and one deleted meanwhile fails the write itself.
BUCKET_SEEN_SECONDS = 60.0
_buckets_seen: dict[tuple[int, str], tuple[Any, float]] = {}


def bucket_exists(fs: Any, bucket: str) -> bool:
    """Whether ``bucket`` exists on ``fs`` (``fs.exists``), remembered for :data:`BUCKET_SEEN_SECONDS`."""
    seen = _buckets_seen.get((id(fs), bucket))
    if seen is not None and seen[0] is fs and time.monotonic() - seen[1] < BUCKET_SEEN_SECONDS:
        return True
    if not fs.exists(bucket):
        return False
    _buckets_seen[(id(fs), bucket)] = (fs, time.monotonic())  # the fs kept: its id is not reused
    return True


class _OnePut(AtomicWriter):
    """Buffers up to one block; :meth:`_put` sends it at the commit, else the parent writer."""

    _pending: bytearray | None = None

    def _start(self) -> None:
        self._pending = bytearray()

    def _write(self, chunk: bytes) -> None:
        pending = self._pending
        if pending is not None:
            if len(pending) + len(chunk) < self.block_size:
                pending += chunk
                return
            self._pending = None
            super()._start()
            super()._write(pending)  # type: ignore[arg-type]  # any buffer: the writers below copy it
        super()._write(chunk)

    def _commit(self, sha256: str) -> None:
        if self._pending is None:
            super()._commit(sha256)
            return
        body, self._pending = bytes(self._pending), None
        self._put(body, sha256)

    def _put(self, body: bytes, sha256: str) -> None:
        raise NotImplementedError

    def _abort(self) -> None:
        self._pending = None
        super()._abort()


class S3Writer(_OnePut, S3PartsWriter):
    """One ``PutObject`` with the metadata, content type and the sha256 as its tag."""

    _tagged = False

    def _put(self, body: bytes, sha256: str) -> None:
        bucket, key = _split(self.target)
        options: dict[str, Any] = {"Metadata": self.metadata, "Tagging": f"{SHA256_KEY}={sha256}"}
        if self.content_type:
            options["ContentType"] = self.content_type
        if not self.overwrite:
            options["IfNoneMatch"] = "*"  # s3fs turns the 412 into FileExistsError
        self.target.fs.call_s3("put_object", Bucket=bucket, Key=key, Body=body, **options)
        self._tagged = True

    def _after_commit(self, sha256: str) -> None:
        if not self._tagged:
            super()._after_commit(sha256)


class AzureWriter(_OnePut, AzureBlocksWriter):
    """One ``Put Blob`` with the metadata (sha256 included) and content type."""

    def _put(self, body: bytes, sha256: str) -> None:
        fs = self.target.fs
        sync(
            fs.loop, self._put_blob, fs, body, {"is_directory": "false", **self.metadata, SHA256_KEY: sha256}
        )

    async def _put_blob(self, fs: Any, body: bytes, metadata: dict[str, str]) -> None:
        from azure.core.exceptions import ResourceExistsError
        from azure.storage.blob import ContentSettings

        path = str(self.target.path)
        container, blob, _ = fs.split_path(path)
        settings = ContentSettings(content_type=self.content_type) if self.content_type else None
        async with fs.service_client.get_blob_client(container=container, blob=blob) as client:
            try:
                await client.upload_blob(
                    data=body, overwrite=self.overwrite, metadata=metadata, content_settings=settings
                )
            except ResourceExistsError as err:  # If-None-Match: * refused: the blob appeared meanwhile
                raise FileExistsError(path) from err
        fs.invalidate_cache(fs._parent(path))


class GcsWriter(_OnePut, GcsChunksWriter):
    """One multipart-related upload with the metadata (sha256 included) and content type
    (``ifGenerationMatch=0`` without overwrite: gcsfs turns the 412 into FileExistsError)."""

    _tagged = False

    def _put(self, body: bytes, sha256: str) -> None:
        from gcsfs.core import simple_upload

        fs = self.target.fs
        bucket, key = _split(self.target)
        metadata = {**self.metadata, SHA256_KEY: sha256}
        content_type = self.content_type or "application/octet-stream"
        mode = "overwrite" if self.overwrite else "create"
        sync(fs.loop, simple_upload, fs, bucket, key, body, metadata, None, content_type, None, mode)
        fs.invalidate_cache(str(self.target.path))
        self._tagged = True

    def _after_commit(self, sha256: str) -> None:
        if not self._tagged:
            super()._after_commit(sha256)


#: The writer of each store kind (any other: ``storage._FsspecWriter``).
WRITERS: dict[str, type[AtomicWriter]] = {
    "file": _LocalWriter,
    "s3": S3Writer,
    "azure": AzureWriter,
    "gcs": GcsWriter,
}

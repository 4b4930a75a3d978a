"""Atomic, memory-bounded writes of a byte stream to object storage (no HTTP to Smart Flows here).

``open_atomic(target, ...)`` returns an :class:`AtomicWriter`: ``write(chunk)`` as the bytes arrive,
then ``commit(expected_size)`` publishes the object, or ``abort()`` drops it. Until ``commit`` the
destination shows nothing, whatever happens to the process (exception or SIGKILL), because every
store's own commit step is used instead of a temporary object and a copy:

=========  ==========================================  ===========================================
store      what ``write`` does                          what ``commit`` does / leftovers of a kill
=========  ==========================================  ===========================================
file       writes to an unnamed file (``O_TMPFILE``)     links it at the target (``link`` refuses an
           in the target's folder, or a hidden           existing one; ``rename`` replaces). A kill
           ``.smartflows-*.part`` sibling without it     leaves nothing, or that hidden sibling
s3         uploads multipart parts                       ``CompleteMultipartUpload`` (``If-None-Match``
                                                        without overwrite). A kill leaves an
                                                        incomplete multipart upload (invisible; a
                                                        lifecycle rule aborts it)
abfs/az    stages blocks of a block blob                 commits the block list (``If-None-Match``
                                                        without overwrite). A kill leaves uncommitted
                                                        blocks (invisible; Azure drops them in 7 days)
gs/gcs     sends resumable-upload chunks                 the last chunk finalises the object
                                                        (``ifGenerationMatch=0`` without overwrite).
                                                        A kill leaves an open upload session
                                                        (invisible; GCS drops it after a week)
=========  ==========================================  ===========================================

Memory is bounded by the block size (:data:`DEFAULT_BLOCK_SIZES`, override with ``block_size``):
the store's client holds two to four blocks at a time whatever the document's size.

Integrity metadata (``metadata`` plus ``sha256``): S3 and GCS take metadata when the upload
*starts*, before the sha256 is known, so ``metadata`` goes there at the start and the sha256 is
added right after the commit without rewriting the data (S3: an object tag ``sha256``; GCS: a
metadata update). Azure takes the metadata with the block-list commit, so the sha256 arrives with
the content. Local files get none (no sidecar files, no extended attributes).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from airflow_provider_smartflows.exceptions import SmartFlowsDownloadError, SmartFlowsInputError

if TYPE_CHECKING:
    from types import TracebackType

    from airflow.providers.common.compat.sdk import ObjectStoragePath

log = logging.getLogger(__name__)

MIB = 1 << 20

#: Bytes buffered before each upload request, per store kind. Chosen so that a download stays well
#: under 32 MiB of its own memory (the client holds two to four blocks) while each request is big
#: enough to run at loopback speed:
#: - s3: 5 MiB parts, S3's minimum (10,000 parts allow objects up to 48 GiB; s3fs holds about four
#:   parts at a time, so 8 MiB parts measured 33 MiB for the write, 5 MiB parts 21 MiB);
#: - gcs: 8 MiB chunks (a multiple of the 256 KiB that resumable uploads require);
#: - azure: 4 MiB blocks (the Azure SDK copies a block once more; 50,000 blocks allow 195 GiB);
#: - file: 1 MiB writes (the kernel's page cache does the rest).
DEFAULT_BLOCK_SIZES = {"s3": 5 * MIB, "gcs": 8 * MIB, "azure": 4 * MIB, "file": 1 * MIB, "other": 8 * MIB}

#: Metadata key of the content's sha256 (hex), on the stores that keep it.
SHA256_KEY = "sha256"

_KINDS = {
    "file": "file",
    "local": "file",
    "s3": "s3",
    "s3a": "s3",
    "gs": "gcs",
    "gcs": "gcs",
    "abfs": "azure",
    "abfss": "azure",
    "az": "azure",
}
_CONTAINER_WORD = {"s3": "bucket", "gcs": "bucket", "azure": "container"}


@dataclass(frozen=True)
class StoredObject:
    """What a committed write put at its target."""

    uri: str
    size: int
    sha256: str


def store_kind(target: ObjectStoragePath) -> str:
    """``file``, ``s3``, ``gcs``, ``azure``, or ``other`` for the target's filesystem."""
    protocols = target.fs.protocol
    for protocol in (protocols,) if isinstance(protocols, str) else protocols:
        if protocol in _KINDS:
            return _KINDS[protocol]
    return "other"


def _split(target: ObjectStoragePath) -> tuple[str, str]:
    """(bucket or container, key) of an object-store path."""
    bucket, _, key = str(target.path).lstrip("/").partition("/")
    return bucket, key


def check_destination(target: ObjectStoragePath, conn_id: str | None = None) -> None:
    """
    Verify that the bucket or container of ``target`` exists, creating nothing.

    Local paths need no check (their folders are created by the write). Raises
    :class:`SmartFlowsDownloadError` naming the bucket and the connection when it is missing.

    :param target: the object to be written.
    :param conn_id: the storage connection, for the message (default: the path's own).
    """
    kind = store_kind(target)
    if kind == "file":
        return
    bucket, key = _split(target)
    word = _CONTAINER_WORD.get(kind, "bucket")
    # Airflow >= 3.1 keeps the connection as an attribute; 3.0 only in storage_options.
    connection = conn_id or getattr(target, "conn_id", None) or target.storage_options.get("conn_id")
    if not bucket or not key:
        raise SmartFlowsInputError(f"{target} names no object inside a {word}: give {word}/key.")
    if not target.fs.exists(bucket):
        via = f"connection {connection!r}" if connection else "the default credentials"
        raise SmartFlowsDownloadError(
            f"The {word} {bucket!r} of {target} does not exist (seen through {via}). "
            f"Create it, or fix the {word} name or the connection; the provider never creates {word}s.",
            uri=str(target),
            bucket=bucket,
            conn_id=connection,
        )


class AtomicWriter:
    """One object being written; nothing is visible at ``target`` before :meth:`commit`.

    Use as a context manager: leaving the block without :meth:`commit` (by an exception or
    otherwise) aborts the write.
    """

    def __init__(self, target: ObjectStoragePath, *, overwrite: bool, block_size: int) -> None:
        self.target = target
        self.overwrite = overwrite
        self.block_size = block_size
        self.size = 0
        self._digest = hashlib.sha256()
        self._done = False

    def write(self, chunk: bytes) -> None:
        """Append ``chunk`` (any size; buffered up to ``block_size`` before each upload)."""
        if self._done:
            raise ValueError(f"The write to {self.target} is already committed or aborted.")
        self._digest.update(chunk)
        self.size += len(chunk)
        self._write(chunk)

    def commit(self, expected_size: int | None = None) -> StoredObject:
        """
        Publish the object after checking its size; on any failure abort and raise.

        :param expected_size: the byte count announced by the source (None when unknown).
        """
        if self._done:
            raise ValueError(f"The write to {self.target} is already committed or aborted.")
        if expected_size is not None and expected_size != self.size:
            self.abort()
            raise SmartFlowsDownloadError(
                f"Not saving {self.target}: {self.size} bytes arrived but {expected_size} were "
                "announced. Nothing was saved; run the download again.",
                uri=str(self.target),
            )
        sha256 = self._digest.hexdigest()
        try:
            self._commit(sha256)
        except FileExistsError as err:
            self.abort()
            raise self._exists_error("appeared during the write") from err
        except BaseException:
            self.abort()
            raise
        self._done = True
        self._after_commit(sha256)
        return StoredObject(uri=str(self.target), size=self.size, sha256=sha256)

    def abort(self) -> None:
        """Drop everything written so far (idempotent; never raises for the store's own cleanup)."""
        if self._done:
            return
        self._done = True
        try:
            self._abort()
        except Exception:
            # The upload stays uncommitted, hence invisible; the store's lifecycle removes it.
            log.warning("Could not clean up the aborted write to %s", self.target, exc_info=True)

    def __enter__(self) -> AtomicWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.abort()

    def _exists_error(self, how: str) -> SmartFlowsDownloadError:
        return SmartFlowsDownloadError(
            f"Not saving {self.target}: it {how}. Remove it, choose another destination, "
            "or pass overwrite=True.",
            uri=str(self.target),
        )

    # Store-specific steps.
    def _write(self, chunk: bytes) -> None:
        raise NotImplementedError

    def _commit(self, sha256: str) -> None:
        raise NotImplementedError

    def _after_commit(self, sha256: str) -> None:
        """Add the sha256 where it could not travel with the commit (best effort)."""

    def _abort(self) -> None:
        raise NotImplementedError


class _LocalWriter(AtomicWriter):
    """An unnamed ``O_TMPFILE`` in the target's folder, linked into place at commit (a hidden
    ``.smartflows-<uuid>.part`` sibling where the filesystem has no ``O_TMPFILE``)."""

    def __init__(self, target: ObjectStoragePath, *, overwrite: bool, block_size: int) -> None:
        super().__init__(target, overwrite=overwrite, block_size=block_size)
        path = os.path.abspath(str(target.path))
        folder, self._name = os.path.split(path)
        os.makedirs(folder, exist_ok=True)
        self._dir = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        self._part: str | None = None
        try:
            fd = os.open(folder, os.O_TMPFILE | os.O_WRONLY | os.O_CLOEXEC, 0o666)
        except (AttributeError, OSError):
            self._part = f".smartflows-{uuid.uuid4().hex}.part"
            flags = os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC
            fd = os.open(self._part, flags, 0o666, dir_fd=self._dir)
        self._file = os.fdopen(fd, "wb", buffering=block_size)

    def _write(self, chunk: bytes) -> None:
        self._file.write(chunk)

    def _commit(self, sha256: str) -> None:
        self._file.flush()
        os.fsync(self._file.fileno())
        if self._part is None:
            # The unnamed file gets a name (linkat through /proc follows the descriptor's link).
            name = f".smartflows-{uuid.uuid4().hex}.part" if self.overwrite else self._name
            source = f"/proc/self/fd/{self._file.fileno()}"
            os.link(source, name, dst_dir_fd=self._dir, follow_symlinks=True)  # refuses an existing name
            if not self.overwrite:
                self._close()
                return
            self._part = name
        if self.overwrite:
            os.replace(self._part, self._name, src_dir_fd=self._dir, dst_dir_fd=self._dir)
        else:
            os.link(self._part, self._name, src_dir_fd=self._dir, dst_dir_fd=self._dir)
            os.unlink(self._part, dir_fd=self._dir)
        self._part = None
        self._close()

    def _abort(self) -> None:
        if self._part is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._part, dir_fd=self._dir)
        self._close()

    def _close(self) -> None:
        self._file.close()
        if self._dir >= 0:
            os.close(self._dir)
            self._dir = -1


class _FsspecWriter(AtomicWriter):
    """An fsspec buffered file opened with ``autocommit=False`` (S3 multipart, GCS resumable and
    any other store that implements ``commit``/``discard``)."""

    def __init__(
        self,
        target: ObjectStoragePath,
        *,
        overwrite: bool,
        block_size: int,
        metadata: dict[str, str],
        content_type: str | None,
        kind: str,
    ) -> None:
        super().__init__(target, overwrite=overwrite, block_size=block_size)
        self._kind = kind
        self._metadata = metadata
        self._fs = target.fs
        self._path = str(target.path)
        options: dict[str, Any] = {}
        if kind == "s3":
            options["Metadata"] = metadata
            if content_type:
                options["ContentType"] = content_type
        elif kind == "gcs":
            options["metadata"] = metadata
            options["content_type"] = content_type
        mode = "wb" if overwrite else "xb"
        self._file = self._fs.open(self._path, mode, block_size=block_size, autocommit=False, **options)

    def _write(self, chunk: bytes) -> None:
        self._file.write(chunk)

    def _commit(self, sha256: str) -> None:
        # close() sends what is buffered without finishing the upload (autocommit=False);
        # commit() completes the multipart upload / finalises the resumable upload.
        # An existing object under "xb" fails the commit with FileExistsError (s3fs, gcsfs, adlfs).
        self._file.close()
        self._file.commit()
        self._forget()

    def _after_commit(self, sha256: str) -> None:
        try:
            if self._kind == "s3":
                bucket, key = _split(self.target)
                self._fs.call_s3(
                    "put_object_tagging",
                    Bucket=bucket,
                    Key=key,
                    Tagging={"TagSet": [{"Key": SHA256_KEY, "Value": sha256}]},
                )
            elif self._kind == "gcs":
                # All keys again: GCS merges them, some emulators replace the whole set.
                self._fs.setxattrs(self._path, **{**self._metadata, SHA256_KEY: sha256})
        except Exception:
            log.warning("%s is saved, but its sha256 could not be attached to it", self.target, exc_info=True)

    def _abort(self) -> None:
        try:
            self._file.discard()
        finally:
            # A discarded file must not be flushed again by close() or the garbage collector.
            self._file.closed = True
            self._forget()

    def _forget(self) -> None:
        # fsspec keeps every autocommit=False file in the filesystem's transaction list.
        with contextlib.suppress(ValueError, AttributeError):
            self._fs.transaction.files.remove(self._file)


class _AzureWriter(AtomicWriter):
    """An adlfs block-blob file: blocks are staged as they fill; closing commits the block list
    (with the metadata, sha256 included), so the writer never closes it before :meth:`commit`."""

    def __init__(
        self,
        target: ObjectStoragePath,
        *,
        overwrite: bool,
        block_size: int,
        metadata: dict[str, str],
        content_type: str | None,
    ) -> None:
        super().__init__(target, overwrite=overwrite, block_size=block_size)
        self._metadata = {"is_directory": "false", **metadata}
        settings = {"content_type": content_type} if content_type else None
        mode = "wb" if overwrite else "xb"
        self._file = target.fs.open(
            str(target.path), mode, block_size=block_size, metadata=self._metadata, content_settings=settings
        )

    def _write(self, chunk: bytes) -> None:
        self._file.write(chunk)

    def _commit(self, sha256: str) -> None:
        self._file.metadata = {**self._metadata, SHA256_KEY: sha256}
        self._file.close()

    def _abort(self) -> None:
        # adlfs commits on close() and in __del__: mark the file closed without its final flush;
        # the staged blocks stay uncommitted (invisible) until Azure drops them.
        self._file.closed = True


def open_atomic(
    target: ObjectStoragePath,
    *,
    overwrite: bool = False,
    block_size: int | None = None,
    metadata: dict[str, str] | None = None,
    content_type: str | None = None,
) -> AtomicWriter:
    """
    Start an atomic write of ``target``; see the module's docstring for what each store does.

    Checks before anything is written: the bucket/container exists (nothing is ever created
    above the object; local folders are), and ``target`` does not exist unless ``overwrite``.

    :param target: the object to write (its folder, bucket or container must exist on object stores).
    :param overwrite: replace an existing object (atomically) instead of failing.
    :param block_size: bytes buffered per upload request (default :data:`DEFAULT_BLOCK_SIZES`).
    :param metadata: object metadata (keys: letters, digits and "_", as Azure requires).
    :param content_type: the object's content type, where the store keeps one.
    """
    kind = store_kind(target)
    size = block_size if block_size is not None else DEFAULT_BLOCK_SIZES[kind]
    if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
        raise SmartFlowsInputError(f"block_size must be a positive integer, not {block_size!r}.")
    if kind == "s3" and size < 5 * MIB:
        raise SmartFlowsInputError(f"block_size for S3 must be at least 5 MiB (S3's part size), not {size}.")
    metadata = dict(metadata or {})
    for key in metadata:
        if not key.isidentifier() or not key.isascii():
            raise SmartFlowsInputError(f"Metadata key {key!r}: use ASCII letters, digits and '_'.")
    check_destination(target)
    if not overwrite and target.exists():
        raise SmartFlowsDownloadError(
            f"Not writing {target}: it already exists. Remove it, choose another destination, "
            "or pass overwrite=True.",
            uri=str(target),
        )
    writer: AtomicWriter
    if kind == "file":
        writer = _LocalWriter(target, overwrite=overwrite, block_size=size)
    elif kind == "azure":
        writer = _AzureWriter(
            target, overwrite=overwrite, block_size=size, metadata=metadata, content_type=content_type
        )
    else:
        writer = _FsspecWriter(
            target,
            overwrite=overwrite,
            block_size=size,
            metadata=metadata,
            content_type=content_type,
            kind=kind,
        )
    return writer


def lineage_dataset(target: ObjectStoragePath) -> tuple[str, str]:
    """
    (namespace, name) of ``target`` as an OpenLineage dataset, named the way the providers do.

    ``file`` + absolute path (common.io), ``s3://bucket`` + key (Amazon), ``gs://bucket`` + key
    (Google), ``wasbs://container@account`` + blob name (Microsoft Azure); else ``scheme://bucket``.
    """
    kind = store_kind(target)
    if kind == "file":
        return "file", os.path.abspath(str(target.path))
    bucket, key = _split(target)
    if kind == "azure":
        fs = target.fs  # adlfs: the account is the service client's when a connection string is used
        account = getattr(fs, "account_name", None) or getattr(
            getattr(fs, "service_client", None), "account_name", None
        )
        account = account or "unknown"
        return f"wasbs://{bucket}@{account}", key
    scheme = {"s3": "s3", "gcs": "gs"}.get(kind, str(target.protocol))
    return f"{scheme}://{bucket}", key

"""Atomic, memory-bounded writes of a byte stream to object storage (no HTTP to Smart Flows here).

``open_atomic(target, ...)`` checks the target (once: its bucket exists; unless ``overwrite`` or
``probe=False``, nothing is there) and returns an :class:`AtomicWriter`: ``write(chunk)`` as the
bytes arrive, then ``commit(expected_size)`` publishes the object, or ``abort()`` drops it. Until
``commit`` the destination shows nothing, whatever happens to the process (exception or SIGKILL),
because every store's own commit step is used instead of a temporary object and a copy:

=========  ==========================================  ===========================================
store      what ``write`` does                          what ``commit`` does / leftovers of a kill
=========  ==========================================  ===========================================
file       writes to an unnamed file (``O_TMPFILE``)     links it at the target (``link`` refuses an
           in the target's folder, or a hidden           existing one; ``rename`` replaces). A kill
           ``.smartflows-*.part`` sibling without it     leaves nothing, or that hidden sibling
s3         uploads multipart parts (under one part:      ``CompleteMultipartUpload`` (``If-None-Match``
           buffers it for one ``PutObject``)             without overwrite; the same header on the
                                                        one ``PutObject``). A kill leaves an
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
a writer holds the blocks in flight plus the one filling (:data:`.storage_large.IN_FLIGHT`)
whatever the document's size.

Integrity metadata (``metadata`` plus ``sha256``): S3 and GCS take metadata when the upload
*starts*, before the sha256 is known, so ``metadata`` goes there at the start and the sha256 is
added right after the commit without rewriting the data (S3: an object tag ``sha256``; GCS: a
metadata update). Azure takes the metadata with the block-list commit, so the sha256 arrives with
the content. Local files get none (no sidecar files, no extended attributes).

Paths and names live here too: :func:`object_path` builds every ``ObjectStoragePath`` from a URI
and an optional connection, :func:`destination_path` tells a folder from a file, and
:func:`numbered_name` / :func:`unique_names` number objects that would share a name.
"""

from __future__ import annotations

import contextlib
import logging
import os
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import ObjectStoragePath

from airflow_provider_smartflows.digest import StreamDigest
from airflow_provider_smartflows.exceptions import SmartFlowsDownloadError, SmartFlowsInputError
from airflow_provider_smartflows.filesystems import check_filesystem_available as check_filesystem_available
from airflow_provider_smartflows.validation import check_int
from airflow_provider_smartflows.write_behind import WriteBehind

if TYPE_CHECKING:
    from collections.abc import Iterable
    from types import TracebackType

log = logging.getLogger(__name__)

MIB = 1 << 20

#: Bytes buffered before each upload request, per store kind. Chosen so that a download stays well
#: under 32 MiB of its own memory (blocks in flight + 1, storage_large) while each request is big
#: enough to run at loopback speed:
#: - s3: 8 MiB parts, two in flight plus one filling (storage_large; 10,000 parts allow objects up
#:   to 78 GiB): 25 MiB for a 256 MiB write; fewer requests ran faster than 5 MiB x 3 (B3);
#: - gcs: 8 MiB chunks (a multiple of the 256 KiB that resumable uploads require);
#: - azure: 4 MiB blocks, four staged at once (storage_large; 50,000 blocks allow 195 GiB);
#: - file: 1 MiB writes (the kernel's page cache does the rest).
DEFAULT_BLOCK_SIZES = {"s3": 8 * MIB, "gcs": 8 * MIB, "azure": 4 * MIB, "file": 1 * MIB, "other": 8 * MIB}

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


# --------------------------------------------------------------------------- paths and names


def object_path(uri: str | ObjectStoragePath, conn_id: str | None = None) -> ObjectStoragePath:
    """
    ``uri`` as an ``ObjectStoragePath`` read through the connection ``conn_id``.

    The one place a path is built from a URI and an optional connection. Without ``conn_id``
    (None or "", e.g. a template that rendered to nothing) the URI's own connection is used
    (``s3://conn@bucket/key``), else the store's default credentials. A path is returned as is.
    """
    if isinstance(uri, ObjectStoragePath):
        return uri
    # conn_id=None would hide a URI's own (s3://conn@bucket/) on Airflow 2: pass it only when set.
    return ObjectStoragePath(uri, **({"conn_id": conn_id} if conn_id else {}))


def destination_path(destination: object, conn_id: str | None = None) -> tuple[ObjectStoragePath, bool]:
    """
    A download's destination as a path, and whether it names a folder.

    A URI names a folder when it ends with ``/``; an ``ObjectStoragePath`` (which drops a trailing
    ``/``) when it was given with one or an existing directory is there. Anything else is the exact
    target of one document.
    """
    if isinstance(destination, ObjectStoragePath):
        return destination, str(destination).endswith("/") or destination.is_dir()
    if not isinstance(destination, str):
        raise SmartFlowsInputError(
            f"destination must be an ObjectStoragePath or a URI string, not {type(destination).__name__}."
        )
    text = destination.strip()
    if not text:
        raise SmartFlowsInputError("destination is empty: give a folder URI ending with '/' or a file's URI.")
    return object_path(text, conn_id), text.endswith("/")


def numbered_name(name: str, number: int) -> str:
    """
    The name of the ``number``-th object that would be called ``name``: ``name`` itself for 1, then
    ``stem (2).ext``, ``stem (3).ext``... For a path, its last segment is numbered
    (``a/b.pdf`` -> ``a/b (2).pdf``).
    """
    if number <= 1:
        return name
    head, slash, tail = name.rpartition("/")
    stem, dot, ext = tail.rpartition(".")
    tail = f"{stem} ({number}).{ext}" if dot and stem else f"{tail} ({number})"
    return f"{head}{slash}{tail}"


def unique_names(names: Iterable[str]) -> list[str]:
    """``names`` in order, each one not yet used (case-insensitively) numbered by :func:`numbered_name`."""
    used: set[str] = set()
    unique = []
    for name in names:
        number = 1
        while (candidate := numbered_name(name, number)).casefold() in used:
            number += 1
        used.add(candidate.casefold())
        unique.append(candidate)
    return unique


# --------------------------------------------------------------------------- target checks


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
    from airflow_provider_smartflows.storage_small import bucket_exists  # it imports this module

    if not bucket_exists(target.fs, bucket):
        via = f"connection {connection!r}" if connection else "the default credentials"
        raise SmartFlowsDownloadError(
            f"The {word} {bucket!r} of {target} does not exist (seen through {via}). "
            f"Create it, or fix the {word} name or the connection; the provider never creates {word}s.",
            uri=str(target),
            bucket=bucket,
            conn_id=connection,
        )


def _exists_error(target: ObjectStoragePath, how: str, document_id: str | None) -> SmartFlowsDownloadError:
    """The refusal to replace an object without ``overwrite`` (``how``: "already exists", ...)."""
    what = f"downloading document {document_id!r}: {target}" if document_id else f"saving {target}: it"
    return SmartFlowsDownloadError(
        f"Not {what} {how}. Remove it, choose another destination, or pass overwrite=True.",
        document_id=document_id,
        uri=str(target),
    )


# --------------------------------------------------------------------------- writers


class AtomicWriter:
    """One object being written; nothing is visible at ``target`` before :meth:`commit`.

    The store's upload starts with the first :meth:`write` (or the commit of an empty object):
    until then :attr:`content_type` may still be set (from a response's headers, say), and a
    write that never starts leaves nothing behind, not even a local folder. Use as a context
    manager: leaving the block without :meth:`commit` (by an exception or otherwise) aborts.
    """

    def __init__(
        self,
        target: ObjectStoragePath,
        *,
        kind: str,
        overwrite: bool,
        block_size: int,
        metadata: dict[str, str],
        content_type: str | None,
        document_id: str | None,
        probed: bool = True,
    ) -> None:
        self.target = target
        self.kind = kind
        self.overwrite = overwrite
        self.block_size = block_size
        self.metadata = metadata
        self.document_id = document_id
        # Unprobed, the store's create-only commit is the only "already exists" check.
        self._exists_how = "appeared during the write" if probed else "already exists"
        self.size = 0
        self._content_type = content_type
        self._digest = StreamDigest(use_thread=kind == "file")  # object stores: no memory left for its queue
        self._started = False
        self._done = False

    @property
    def content_type(self) -> str | None:
        """The object's content type, where the store keeps one; settable until the first write."""
        return self._content_type

    @content_type.setter
    def content_type(self, value: str | None) -> None:
        if self._started:
            raise ValueError(f"The write to {self.target} has started: its content type is decided.")
        self._content_type = value

    def write(self, chunk: bytes) -> None:
        """Append ``chunk`` (any size; buffered up to ``block_size`` before each upload)."""
        self._refuse_if_done()
        self._start_once()
        self._digest.update(chunk)
        self.size += len(chunk)
        self._write(chunk)

    def commit(self, expected_size: int | None = None) -> StoredObject:
        """
        Publish the object after checking its size; on any failure abort and raise.

        :param expected_size: the byte count announced by the source (None when unknown).
        """
        self._refuse_if_done()
        if expected_size is not None and expected_size != self.size:
            self.abort()
            raise SmartFlowsDownloadError(
                f"Not saving {self.target}: {self.size} bytes arrived but {expected_size} were "
                "announced. Nothing was saved; run the download again.",
                document_id=self.document_id,
                uri=str(self.target),
            )
        self._start_once()
        try:
            sha256 = self._digest.hexdigest()  # waits for the hashing thread; raises what failed there
            self._commit(sha256)
        except FileExistsError as err:
            self.abort()
            raise _exists_error(self.target, self._exists_how, self.document_id) from err
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
        self._digest.close()
        if not self._started:
            return
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

    def _refuse_if_done(self) -> None:
        if self._done:
            raise ValueError(f"The write to {self.target} is already committed or aborted.")

    def _start_once(self) -> None:
        if self._started:
            return
        self._started = True  # from here on, abort() cleans up whatever _start() got done
        try:
            self._start()
        except FileExistsError as err:  # the store's own "xb" check: the object appeared meanwhile
            self.abort()
            raise _exists_error(self.target, self._exists_how, self.document_id) from err
        except BaseException:
            self.abort()
            raise

    # Store-specific steps.
    def _start(self) -> None:
        raise NotImplementedError

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

    _dir = -1
    _part: str | None = None
    _file: Any = None

    def _start(self) -> None:
        path = os.path.abspath(str(self.target.path))
        folder, self._name = os.path.split(path)
        os.makedirs(folder, exist_ok=True)
        self._dir = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            fd = os.open(folder, os.O_TMPFILE | os.O_WRONLY | os.O_CLOEXEC, 0o666)
        except (AttributeError, OSError):
            self._part = f".smartflows-{uuid.uuid4().hex}.part"
            flags = os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC
            fd = os.open(self._part, flags, 0o666, dir_fd=self._dir)
        self._file = os.fdopen(fd, "wb", buffering=0)
        self._behind = WriteBehind(fd)  # the chunks go to the kernel as they are, uncopied

    def _write(self, chunk: bytes) -> None:
        self._behind.write(chunk)

    def _commit(self, sha256: str) -> None:
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
        if self._part is not None and self._dir >= 0:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._part, dir_fd=self._dir)
        self._close()

    def _close(self) -> None:
        if self._file is not None:
            self._file.close()
        if self._dir >= 0:
            os.close(self._dir)
            self._dir = -1


class _FsspecWriter(AtomicWriter):
    """An fsspec buffered file opened with ``autocommit=False``: the writer of a store without one
    of its own (S3, Azure and GCS have theirs in :mod:`.storage_large` / :mod:`.storage_small`),
    if its filesystem implements ``commit``/``discard``; no metadata (fsspec has no common way)."""

    _file: Any = None

    def _start(self) -> None:
        self._fs = self.target.fs
        self._path = str(self.target.path)
        mode = "wb" if self.overwrite else "xb"
        self._file = self._fs.open(self._path, mode, block_size=self.block_size, autocommit=False)

    def _write(self, chunk: bytes) -> None:
        self._file.write(chunk)

    def _commit(self, sha256: str) -> None:
        # close() sends what is buffered without finishing the upload (autocommit=False);
        # commit() completes the multipart upload / finalises the resumable upload.
        # An existing object under "xb" fails the commit with FileExistsError (s3fs, gcsfs, adlfs).
        self._file.close()
        self._file.commit()
        self._forget()

    def _abort(self) -> None:
        if self._file is None:
            return
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


def open_atomic(
    target: ObjectStoragePath,
    *,
    overwrite: bool = False,
    block_size: int | None = None,
    metadata: dict[str, str] | None = None,
    content_type: str | None = None,
    conn_id: str | None = None,
    document_id: str | None = None,
    probe: bool = True,
) -> AtomicWriter:
    """
    Start an atomic write of ``target``; see the module's docstring for what each store does.

    The target checks run here, once per object, before anything is written (so a download
    calls this before it sends its content request): the bucket/container exists (nothing is
    ever created above the object; local folders are), and ``target`` does not exist unless
    ``overwrite``. The store itself refuses, at the commit, an object that appears meanwhile; with
    ``probe=False`` that create-only commit is the only check (no request before the write: the
    object is refused, with the same error, after its bytes were read).

    :param target: the object to write (its folder, bucket or container must exist on object stores).
    :param overwrite: replace an existing object (atomically) instead of failing.
    :param block_size: bytes buffered per upload request (default :data:`DEFAULT_BLOCK_SIZES`).
    :param metadata: object metadata (keys: letters, digits and "_", as Azure requires).
    :param content_type: the object's content type, where the store keeps one (also settable on
        the writer until its first write).
    :param conn_id: the storage connection, named in errors (default: the path's own).
    :param document_id: the Smart Flows document being saved, named in errors.
    :param probe: ask the store whether ``target`` exists before writing (the bucket check, remembered
        for a minute, runs either way).
    """
    kind = store_kind(target)
    size = DEFAULT_BLOCK_SIZES[kind] if block_size is None else check_int("block_size", block_size, minimum=1)
    if kind == "s3" and size < 5 * MIB:
        raise SmartFlowsInputError(f"block_size for S3 must be at least 5 MiB (S3's part size), not {size}.")
    metadata = dict(metadata or {})
    for key in metadata:
        if not key.isidentifier() or not key.isascii():
            raise SmartFlowsInputError(f"Metadata key {key!r}: use ASCII letters, digits and '_'.")
    check_destination(target, conn_id)
    if probe and not overwrite and target.exists():
        raise _exists_error(target, "already exists", document_id)
    from airflow_provider_smartflows.storage_small import WRITERS  # they subclass ours

    return WRITERS.get(kind, _FsspecWriter)(
        target,
        kind=kind,
        overwrite=overwrite,
        block_size=size,
        metadata=metadata,
        content_type=content_type,
        document_id=document_id,
        probed=probe,
    )


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

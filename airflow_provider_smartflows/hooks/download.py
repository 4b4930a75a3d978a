"""Saving a streamed document: written in place with the store's own atomic commit, size checked.

Transport-neutral: the hook opens the target with :func:`open_document_target` *before* it asks
for the content (the target checks run there, once: bucket exists, nothing is there unless
``overwrite``), then hands :func:`save_chunks` the body's chunks, its headers and the error
classes its transport raises while they are read. The writes themselves are
:mod:`airflow_provider_smartflows.storage`'s (S3 multipart, Azure block list, GCS resumable upload,
local unnamed file + link): nothing is visible at the target before the commit.
"""

from __future__ import annotations

import contextlib
import logging
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import ObjectStoragePath

from airflow_provider_smartflows.exceptions import (
    SmartFlowsDocumentGoneError,
    SmartFlowsDownloadError,
    SmartFlowsError,
    SmartFlowsInputError,
    SmartFlowsNotFoundError,
)
from airflow_provider_smartflows.models import DownloadedDocument
from airflow_provider_smartflows.storage import destination_path, open_atomic

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator, Mapping
    from contextlib import AbstractContextManager

    from airflow_provider_smartflows.models import DocumentInfo
    from airflow_provider_smartflows.storage import AtomicWriter

log = logging.getLogger(__name__)

#: Object metadata keys (Azure allows letters, digits and "_" only).
DOCUMENT_ID_KEY = "smartflows_document_id"
EXECUTION_ID_KEY = "smartflows_execution_id"


@contextlib.contextmanager
def document_gone(document_id: str, target: object) -> Iterator[None]:
    """Turn a 404 for the document into :class:`SmartFlowsDocumentGoneError` (never retried)."""
    try:
        yield
    except SmartFlowsNotFoundError as err:
        raise SmartFlowsDocumentGoneError(
            f"Document {document_id!r} was not found on Smart Flows (connection {err.conn_id!r}, "
            f"{err.method} {err.path} answered 404): it was purged by the "
            f"server's clean-up or deleted, so it cannot be saved to {target}; nothing was written. It does "
            "not come back: run the flow again for a new document, or keep documents for longer in "
            "the server's clean-up settings.",
            document_id=document_id,
            uri=str(target),
        ) from err


def open_document_target(
    document_id: str,
    target: ObjectStoragePath,
    *,
    conn_id: str | None,
    overwrite: bool,
    content_type: str | None = None,
    execution_id: str | None = None,
    block_size: int | None = None,
    probe: bool = True,
) -> AtomicWriter:
    """The atomic writer of a document's target, its ids as object metadata; raises before any
    download when the bucket/container is missing or (``probe``) the target exists (unless
    ``overwrite``); unprobed, the store's create-only commit refuses an existing target."""
    metadata = {DOCUMENT_ID_KEY: document_id}
    if execution_id:
        metadata[EXECUTION_ID_KEY] = execution_id
    return open_atomic(
        target,
        overwrite=overwrite,
        block_size=block_size,
        metadata=metadata,
        content_type=content_type,
        conn_id=conn_id,
        document_id=document_id,
        probe=probe,
    )


def exact_path(destination: str | ObjectStoragePath, conn_id: str | None) -> ObjectStoragePath:
    """``destination`` as the path of one object, asking the store nothing (a folder is refused)."""
    if isinstance(destination, ObjectStoragePath):
        return destination  # no is_dir(): that is the probe an exact target saves
    path, is_folder = destination_path(destination, conn_id)  # a URI string, or a clear error
    if is_folder:
        raise SmartFlowsInputError(
            f"exact_target=True but {destination!r} names a folder (it ends with '/'): give the "
            "object's own URI, or pass exact_target=False to save into the folder."
        )
    return path


def announced_size(headers: Mapping[str, str]) -> int | None:
    """The body's size from ``Content-Length``; None for a chunked or close-delimited body."""
    value = (headers.get("Content-Length") or "").strip()
    return int(value) if value.isdigit() else None


def is_chunked(headers: Mapping[str, str]) -> bool:
    """Whether the body is chunked (its end is marked, so a cut stream is detected by the client)."""
    return "chunked" in (headers.get("Transfer-Encoding") or "").lower()


def save_chunks(
    chunks: Iterable[bytes],
    writer: AtomicWriter,
    *,
    headers: Mapping[str, str],
    transport_errors: tuple[type[BaseException], ...],
) -> DownloadedDocument:
    """
    Write the body's ``chunks`` through ``writer`` and commit; on any failure nothing is visible.

    The size is verified against ``Content-Length``. Without one, a chunked body is complete only
    when its final empty chunk arrived (the transport raises otherwise, which aborts the write); a
    close-delimited body cannot be verified and is saved with a warning. The response's
    ``Content-Type`` is the object's when the writer has none yet.
    """
    document_id, target = writer.document_id, writer.target
    expected_size = announced_size(headers)
    if expected_size is None and not is_chunked(headers):
        log.warning(
            "Document %s comes without Content-Length or chunked framing: its size cannot be verified",
            document_id,
        )
    if not writer.content_type:
        writer.content_type = headers.get("Content-Type")
    with writer:
        try:
            for chunk in chunks:
                writer.write(chunk)
        except BaseException as err:
            if isinstance(err, SmartFlowsError) or not isinstance(err, (*transport_errors, OSError)):
                raise
            raise SmartFlowsDownloadError(
                f"Downloading document {document_id!r} to {target} failed after {writer.size} bytes "
                f"({type(err).__name__}). Nothing was saved; run the download again.",
                document_id=document_id,
                uri=str(target),
            ) from err
        if expected_size is not None and expected_size != writer.size:
            raise SmartFlowsDownloadError(
                f"Document {document_id!r} arrived truncated: {writer.size} of {expected_size} bytes. "
                "Nothing was saved; run the download again.",
                document_id=document_id,
                uri=str(target),
            )
        stored = writer.commit(expected_size)
    return DownloadedDocument(
        document_id=str(document_id),
        uri=stored.uri,
        size=stored.size,
        sha256=stored.sha256,
        content_type=writer.content_type,
    )


def save_document(
    document_id: str,
    destination: str | ObjectStoragePath,
    *,
    get_document: Callable[[str], DocumentInfo],
    open_content: Callable[[], AbstractContextManager[Any]],
    transport_errors: tuple[type[BaseException], ...],
    chunk_size: int,
    conn_id: str | None = None,
    overwrite: bool = False,
    execution_id: str | None = None,
    block_size: int | None = None,
    info: DocumentInfo | None = None,
    exact_target: bool = False,
) -> DownloadedDocument:
    """
    The body of the sync hook's ``download_document`` (which documents the parameters): resolve a
    folder target (``info``, else ``get_document``), open the target (its checks run before the
    content request: a refused target costs no download), stream ``open_content()``'s answer
    (``iter_content`` and ``headers``, as a ``requests`` response has them) through it.
    """
    if exact_target:
        path, is_folder = exact_path(destination, conn_id), False
    else:
        path, is_folder = destination_path(destination, conn_id)
    content_type: str | None = None
    target = path
    if is_folder:
        if info is None:
            with document_gone(document_id, destination):
                info = get_document(document_id)
        content_type = info.content_type
        target = path / info.file_name
    writer = open_document_target(
        document_id,
        target,
        conn_id=conn_id,
        overwrite=overwrite,
        content_type=content_type,
        execution_id=execution_id,
        block_size=block_size,
        probe=not exact_target,
    )
    with writer, document_gone(document_id, target), open_content() as response:
        return save_chunks(
            response.iter_content(chunk_size=chunk_size),
            writer,
            headers=response.headers,
            transport_errors=transport_errors,
        )

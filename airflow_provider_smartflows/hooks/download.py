"""Saving a streamed document: written in place with the store's own atomic commit, size checked.

Transport-neutral: the sync hook hands over the body's chunks, its framing (Content-Length or
chunked) and the error classes its transport raises while they are read. The writes themselves
are :mod:`airflow_provider_smartflows.storage`'s (S3 multipart, Azure block list, GCS resumable
upload, local unnamed file + link): nothing is visible at the target before the commit.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from airflow_provider_smartflows.exceptions import SmartFlowsDownloadError, SmartFlowsError
from airflow_provider_smartflows.models import DownloadedDocument
from airflow_provider_smartflows.storage import check_destination, open_atomic

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from airflow.providers.common.compat.sdk import ObjectStoragePath

log = logging.getLogger(__name__)

#: Object metadata keys (Azure allows letters, digits and "_" only).
DOCUMENT_ID_KEY = "smartflows_document_id"
EXECUTION_ID_KEY = "smartflows_execution_id"


def prepare_target(
    document_id: str, target: ObjectStoragePath, *, conn_id: str | None, overwrite: bool
) -> None:
    """Checks before the download starts: the bucket/container exists (nothing is created), and
    the target does not, unless ``overwrite``."""
    check_destination(target, conn_id)
    if not overwrite:
        refuse_existing(document_id, target)


def refuse_existing(document_id: str, target: ObjectStoragePath) -> None:
    """Raise if ``target`` exists."""
    if target.exists():
        raise SmartFlowsDownloadError(
            f"Not downloading document {document_id!r}: {target} already exists. "
            "Remove it, choose another destination, or pass overwrite=True.",
            document_id=document_id,
            uri=str(target),
        )


def announced_size(headers: Mapping[str, str]) -> int | None:
    """The body's size from ``Content-Length``; None for a chunked or close-delimited body."""
    value = (headers.get("Content-Length") or "").strip()
    return int(value) if value.isdigit() else None


def is_chunked(headers: Mapping[str, str]) -> bool:
    """Whether the body is chunked (its end is marked, so a cut stream is detected by the client)."""
    return "chunked" in (headers.get("Transfer-Encoding") or "").lower()


def save_chunks(
    chunks: Iterable[bytes],
    target: ObjectStoragePath,
    *,
    document_id: str,
    expected_size: int | None,
    chunked: bool = False,
    content_type: str | None,
    overwrite: bool,
    metadata: Mapping[str, str] | None = None,
    block_size: int | None = None,
    transport_errors: tuple[type[BaseException], ...],
) -> DownloadedDocument:
    """
    Write ``chunks`` to ``target`` atomically; on any failure nothing is visible there.

    The size is verified against ``expected_size`` (Content-Length). Without one, a ``chunked``
    body is complete only when its final empty chunk arrived (the transport raises otherwise,
    which aborts the write); a close-delimited body cannot be verified and is saved with a warning.
    """
    if expected_size is None and not chunked:
        log.warning(
            "Document %s comes without Content-Length or chunked framing: its size cannot be verified",
            document_id,
        )
    with open_atomic(
        target,
        overwrite=overwrite,
        block_size=block_size,
        metadata={DOCUMENT_ID_KEY: document_id, **(metadata or {})},
        content_type=content_type,
    ) as writer:
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
        document_id=document_id,
        uri=stored.uri,
        size=stored.size,
        sha256=stored.sha256,
        content_type=content_type,
    )

"""Saving a streamed document: to a temporary file beside the target, checked, then moved in place.

Transport-neutral: the sync hook hands over the body's chunks and the error classes its transport
raises while they are read.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from typing import TYPE_CHECKING

from airflow_provider_smartflows.exceptions import SmartFlowsDownloadError, SmartFlowsError
from airflow_provider_smartflows.models import DownloadedDocument

if TYPE_CHECKING:
    from collections.abc import Iterable

    from airflow.providers.common.compat.sdk import ObjectStoragePath

log = logging.getLogger(__name__)


class _Tally:
    """Bytes written so far and their sha256."""

    def __init__(self) -> None:
        self.size = 0
        self.digest = hashlib.sha256()

    def add(self, chunk: bytes) -> None:
        self.size += len(chunk)
        self.digest.update(chunk)


def refuse_existing(document_id: str, target: ObjectStoragePath, *, during: bool = False) -> None:
    """Raise if ``target`` exists (before the download, or appeared while it ran)."""
    if not target.exists():
        return
    message = (
        f"Not saving document {document_id!r}: {target} appeared during the download."
        if during
        else f"Not downloading document {document_id!r}: {target} already exists. "
        "Remove it, choose another destination, or pass overwrite=True."
    )
    raise SmartFlowsDownloadError(message, document_id=document_id, uri=str(target))


def _check_complete(document_id: str, target: ObjectStoragePath, size: int, expected: str | None) -> None:
    if expected is not None and expected.isdigit() and int(expected) != size:
        raise SmartFlowsDownloadError(
            f"Document {document_id!r} arrived truncated: {size} of {expected} bytes. "
            "Nothing was saved; run the download again.",
            document_id=document_id,
            uri=str(target),
        )


def save_chunks(
    chunks: Iterable[bytes],
    target: ObjectStoragePath,
    *,
    document_id: str,
    expected_size: str | None,
    content_type: str | None,
    overwrite: bool,
    transport_errors: tuple[type[BaseException], ...],
) -> DownloadedDocument:
    """Write ``chunks`` to ``target`` atomically; on any failure nothing is left behind."""
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.parent / f".smartflows-{uuid.uuid4().hex}.part"
    tally = _Tally()
    try:
        with temporary.open("wb") as sink:
            for chunk in chunks:
                sink.write(chunk)
                tally.add(chunk)
        _check_complete(document_id, target, tally.size, expected_size)
        if not overwrite:
            refuse_existing(document_id, target, during=True)
        temporary.fs.mv(temporary.path, target.path)
    except BaseException as err:
        _remove_quietly(temporary)
        if not isinstance(err, SmartFlowsError) and isinstance(err, (*transport_errors, OSError)):
            raise SmartFlowsDownloadError(
                f"Downloading document {document_id!r} to {target} failed after {tally.size} bytes "
                f"({type(err).__name__}). Nothing was saved; run the download again.",
                document_id=document_id,
                uri=str(target),
            ) from err
        raise
    return DownloadedDocument(
        document_id=document_id,
        uri=str(target),
        size=tally.size,
        sha256=tally.digest.hexdigest(),
        content_type=content_type,
    )


def _remove_quietly(path: ObjectStoragePath) -> None:
    try:
        if path.exists():
            path.unlink()
    except Exception:  # the original error matters more than a failed clean-up
        log.warning("Could not remove the temporary file %s", path)

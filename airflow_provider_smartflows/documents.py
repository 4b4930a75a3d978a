"""Which of a run's documents are written, and in what order: selection by content type and by name
pattern, and the expiry rules. Pure: the callers hand in the documents' metadata and the time.

- :class:`DocumentSelection` (``content_types=``, ``name_pattern=`` of the download operator and the
  batch) says which documents are written; the others are reported as skipped;
- :func:`plan_downloads` orders the selected documents: one whose ``expiration`` is within
  ``[smartflows] expiry_warning_seconds`` goes first (the caller warns); one already expired
  raises :class:`~airflow_provider_smartflows.exceptions.SmartFlowsDocumentExpiredError` before
  anything is written.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from airflow_provider_smartflows.exceptions import SmartFlowsDocumentExpiredError, SmartFlowsInputError

if TYPE_CHECKING:
    from collections.abc import Iterable

    from airflow_provider_smartflows.models import DocumentInfo

#: ``[smartflows] expiry_warning_seconds`` when it is not set: an hour.
DEFAULT_EXPIRY_WARNING_SECONDS = 3600.0


def expiry_warning_seconds() -> float:
    """The ``[smartflows] expiry_warning_seconds`` setting (the default without an Airflow configuration)."""
    try:
        from airflow.providers.common.compat.sdk import conf

        value = conf.getfloat("smartflows", "expiry_warning_seconds", fallback=DEFAULT_EXPIRY_WARNING_SECONDS)
    except Exception:  # no Airflow configuration (a script): the default
        return DEFAULT_EXPIRY_WARNING_SECONDS
    return max(0.0, float(value))


def _mime(content_type: str) -> str:
    """``type/subtype`` in lower case, without parameters (``; charset=...``)."""
    return content_type.split(";", 1)[0].strip().lower()


def check_content_types(value: object) -> tuple[str, ...] | None:
    """``content_types=``: None (every type), else a non-empty list of ``type/subtype`` strings
    (``type/*`` takes every subtype); returned in lower case without parameters."""
    if value is None:
        return None
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple, set, frozenset)):
        raise SmartFlowsInputError(
            f'content_types must be a list of content types, e.g. ["application/pdf"], not {value!r}.'
        )
    if not value:
        raise SmartFlowsInputError(
            "content_types is an empty list, which would select no document: leave it out (None) to "
            'write every document, or name the types to write, e.g. ["application/pdf"].'
        )
    types = []
    for item in value:
        major, slash, minor = _mime(item).partition("/") if isinstance(item, str) else ("", "", "")
        if not (slash and major and minor and "/" not in minor):
            raise SmartFlowsInputError(
                f"content_types: {item!r} is not a content type: write type/subtype, e.g. "
                '"application/pdf" or "image/*".'
            )
        types.append(f"{major}/{minor}")
    return tuple(dict.fromkeys(types))


def check_name_pattern(value: object) -> str | None:
    """``name_pattern=``: None (every name), else a non-empty shell-style pattern (``Invoice*``)."""
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise SmartFlowsInputError(
            f'name_pattern must be a non-empty text pattern such as "Invoice*", not {value!r}.'
        )
    return value


@dataclass(frozen=True)
class DocumentSelection:
    """Which documents are written: those of one of ``content_types`` whose display name matches
    ``name_pattern`` (:func:`fnmatch.fnmatchcase` on the case-folded display name, which has no
    extension: ``Invoice*`` matches "invoice 42" and "INVOICE"); None: no condition.

    :param content_types: ``type/subtype`` in lower case (``type/*``: any subtype); parameters of the
        document's type (``; charset=...``) and its case are ignored.
    :param name_pattern: ``*``, ``?``, ``[abc]`` as in shell patterns.
    """

    content_types: tuple[str, ...] | None = None
    name_pattern: str | None = None

    @classmethod
    def of(cls, content_types: object = None, name_pattern: object = None) -> DocumentSelection:
        """The selection of these (unchecked) arguments; SmartFlowsInputError when malformed."""
        return cls(check_content_types(content_types), check_name_pattern(name_pattern))

    @property
    def selects_all(self) -> bool:
        return self.content_types is None and self.name_pattern is None

    def skip_reason(self, info: DocumentInfo) -> str | None:
        """Why ``info`` is not written, or None when it is."""
        if self.content_types is not None:
            mime = _mime(info.content_type or "")
            wildcard = mime.partition("/")[0] + "/*"
            if not mime or (mime not in self.content_types and wildcard not in self.content_types):
                return f"content type {info.content_type!r} is not one of content_types"
        if self.name_pattern is not None:
            name = (info.display_name or "").casefold()
            if not fnmatch.fnmatchcase(name, self.name_pattern.casefold()):
                return f"display name {info.display_name!r} does not match name_pattern {self.name_pattern!r}"
        return None


def skipped_entry(info: DocumentInfo, reason: str) -> dict[str, Any]:
    """What a result or manifest line says of a document it did not write."""
    return {
        "document_id": info.id,
        "display_name": info.display_name,
        "content_type": info.content_type,
        "reason": reason,
    }


@dataclass
class DownloadPlan:
    """The selected documents in download order (those expiring soon first), the near ones (to warn
    about) and the skipped ones (:func:`skipped_entry`)."""

    documents: list[DocumentInfo] = field(default_factory=list)
    near: list[DocumentInfo] = field(default_factory=list)
    skipped: list[dict[str, Any]] = field(default_factory=list)


def now_utc() -> datetime:
    return datetime.now(timezone.utc)


def _iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def expired_error(info: DocumentInfo, now: datetime, target: object = None) -> SmartFlowsDocumentExpiredError:
    """The error of a document whose ``expiration`` has passed."""
    assert info.expiration is not None
    ago = int((now - info.expiration).total_seconds())
    where = f" to {target}" if target is not None else ""
    return SmartFlowsDocumentExpiredError(
        f"Document {info.id!r} ({info.display_name or 'no display name'}) expired at "
        f"{_iso(info.expiration)}, {ago} s ago: the server's clean-up removes it, so it is not saved"
        f"{where}; nothing was written. Download documents sooner after the flow finishes (run the "
        "flow again for a new document now), or keep documents for longer in the server's clean-up "
        "settings.",
        document_id=info.id,
        uri=str(target) if target is not None else None,
        expiration=_iso(info.expiration),
    )


def near_message(info: DocumentInfo, now: datetime) -> str:
    """The warning of a document that expires soon."""
    assert info.expiration is not None
    left = int((info.expiration - now).total_seconds())
    return (
        f"Document {info.id} ({info.display_name or 'no display name'}) expires at "
        f"{_iso(info.expiration)}, in {left} s (within [smartflows] expiry_warning_seconds): "
        "downloading it first. Download sooner after the flow, or keep documents for longer in the "
        "server's clean-up settings."
    )


def plan_downloads(
    infos: Iterable[DocumentInfo],
    selection: DocumentSelection,
    *,
    now: datetime,
    warning_seconds: float,
    target: object = None,
) -> DownloadPlan:
    """
    Select, check and order documents before any is written.

    :param infos: the documents' metadata, in their own order (kept among equals).
    :param selection: which are written.
    :param now: the current time (aware).
    :param warning_seconds: an expiration this close (or closer) is "near": those go first,
        soonest first.
    :param target: where they go (named in the expired error).
    :raises SmartFlowsDocumentExpiredError: a selected document has expired (the first one).
    """
    plan = DownloadPlan()
    selected: list[DocumentInfo] = []
    for info in infos:
        reason = selection.skip_reason(info)
        if reason is None:
            selected.append(info)
        else:
            plan.skipped.append(skipped_entry(info, reason))
    for info in selected:
        if info.expiration is not None and info.expiration <= now:
            raise expired_error(info, now, target)
    plan.near = sorted(
        (
            i
            for i in selected
            if i.expiration is not None and (i.expiration - now).total_seconds() <= warning_seconds
        ),
        key=lambda i: i.expiration or now,
    )
    near_ids = {id(info) for info in plan.near}
    plan.documents = plan.near + [info for info in selected if id(info) not in near_ids]
    return plan

"""Wire model of the Smart Flows API: statuses, progress, executions, documents.

Pure functions and frozen dataclasses, no I/O. Every parser tolerates unknown fields and
missing optional ones; ``raw`` keeps the server's JSON for anything not modelled here.
"""

from __future__ import annotations

import mimetypes
import re
import unicodedata
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from enum import Enum
from typing import Any

from airflow_provider_smartflows.reconcile import parse_timestamp

__all__ = [
    "MAX_WAIT_SECONDS",
    "DocumentInfo",
    "DocumentRef",
    "DownloadedDocument",
    "Execution",
    "ExecutionProgress",
    "ExecutionStatus",
    "FlowException",
    "find_document_refs",
    "form_items",
    "form_keys",
    "parse_datetime",
    "prompt_key",
    "safe_file_name",
]

#: The longest long-poll the API accepts (``wait`` of the progress call), in seconds.
MAX_WAIT_SECONDS = 3600


class ExecutionStatus(str, Enum):
    """Status of a flow execution, with the exact wire spelling; UNKNOWN for anything else."""

    QUEUED = "Queued"
    RUNNING = "Running"
    WAITING = "Waiting"
    USER_INPUT = "UserInput"
    SUCCESS = "Success"
    WARNING = "Warning"
    ERROR = "Error"
    CANCELED = "Canceled"
    SELECT_FLOW = "SelectFlow"
    INTERRUPTED = "Interrupted"
    UNKNOWN = "Unknown"

    @classmethod
    def parse(cls, raw: object) -> ExecutionStatus:
        """Map a wire value to a status: exact spelling first, then case-insensitively; else UNKNOWN."""
        if isinstance(raw, ExecutionStatus):
            return raw
        if not isinstance(raw, str):
            return cls.UNKNOWN
        try:
            return cls(raw)
        except ValueError:
            return _STATUS_BY_FOLDED.get(raw.strip().casefold(), cls.UNKNOWN)

    @property
    def is_terminal(self) -> bool:
        """Whether the execution is finished and will not change any more."""
        return self in _TERMINAL

    @property
    def is_success(self) -> bool:
        """Finished with its documents produced (Success, or Warning from a post-processing block)."""
        return self in _SUCCESS

    @property
    def is_failure(self) -> bool:
        """Finished without success (Error, Canceled, Interrupted)."""
        return self in _FAILURE

    @property
    def needs_input(self) -> bool:
        """Waiting for a person: a form to answer (UserInput) or a flow to pick (SelectFlow)."""
        return self in (ExecutionStatus.USER_INPUT, ExecutionStatus.SELECT_FLOW)

    def __str__(self) -> str:
        return self.value


_SUCCESS = frozenset({ExecutionStatus.SUCCESS, ExecutionStatus.WARNING})
_FAILURE = frozenset({ExecutionStatus.ERROR, ExecutionStatus.CANCELED, ExecutionStatus.INTERRUPTED})
# UNKNOWN is deliberately neither terminal nor failed: callers decide (e.g. fail after a grace period).
_TERMINAL = _SUCCESS | _FAILURE
_STATUS_BY_FOLDED = {status.value.casefold(): status for status in ExecutionStatus}
_STATUS_BY_FOLDED["cancelled"] = ExecutionStatus.CANCELED
_STATUS_BY_FOLDED["user_input"] = ExecutionStatus.USER_INPUT
_STATUS_BY_FOLDED["select_flow"] = ExecutionStatus.SELECT_FLOW


def _str_or_none(value: object) -> str | None:
    if value is None or isinstance(value, (dict, list)):
        return None
    return str(value)


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _require_mapping(data: object, what: str) -> Mapping[str, Any]:
    if not isinstance(data, Mapping):
        raise ValueError(f"a Smart Flows {what} must be a JSON object, got {type(data).__name__}")
    if data.get("id") in (None, ""):
        raise ValueError(f"a Smart Flows {what} has no 'id'")
    return data


@dataclass(frozen=True)
class DocumentRef:
    """A reference to a generated document, as found inside a progress or execution."""

    id: str
    display_name: str | None = None


@dataclass(frozen=True)
class FlowException:
    """The structured failure detail of the API (FlowException)."""

    error: str | None
    message: str | None
    causes: tuple[str, ...] = ()

    @classmethod
    def from_json(cls, data: object) -> FlowException:
        if not isinstance(data, Mapping):
            return cls(error=None, message=_str_or_none(data))
        causes = data.get("causes") or []
        if not isinstance(causes, list):
            causes = [causes]
        return cls(
            error=_str_or_none(data.get("error")),
            message=_str_or_none(data.get("message")),
            causes=tuple(str(cause) for cause in causes if cause is not None),
        )

    def __str__(self) -> str:
        text = ": ".join(part for part in (self.error, self.message) if part) or "unspecified error"
        if self.causes:
            text += f" (causes: {'; '.join(self.causes)})"
        return text


def form_items(form: object) -> Iterator[Mapping[str, Any]]:
    """Every item with a ``key`` in a form layout, in order (sections nest their items in ``items``).

    The one form-layout reader: the form's keys, the same-prompt key and the fields of a request
    shown in Airflow all come from it.
    """
    if isinstance(form, Mapping):
        key = form.get("key")
        if isinstance(key, str) and key:
            yield form
        yield from form_items(form.get("items"))
    elif isinstance(form, (list, tuple)):
        for entry in form:
            yield from form_items(entry)


def form_keys(data: Mapping[str, Any]) -> tuple[str, ...]:
    """The keys a prompt asks for: its schema's properties, then the form layout's keys."""
    keys: dict[str, None] = {}
    properties = _mapping(_mapping(data.get("schema")).get("properties"))
    keys.update(dict.fromkeys(str(key) for key in properties))
    keys.update(dict.fromkeys(str(item["key"]) for item in form_items(data.get("form"))))
    return tuple(keys)


def prompt_key(data: Mapping[str, Any]) -> str:
    """One prompt's identity in a FlowExecutionProgress: the block asking and its form keys.

    Stable while the prompt waits; the one "same prompt" key (a prompt is answered once, and a
    request in Airflow stands for one prompt).
    """
    current = data.get("currentData")
    block = current.get("id") if isinstance(current, Mapping) else None
    return f"{block}|{','.join(sorted(form_keys(data)))}"


def _percentage(value: object) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


@dataclass(frozen=True)
class ExecutionProgress:
    """FlowExecutionProgress: what the start, progress, answer and cancel calls return."""

    id: str
    status: ExecutionStatus
    raw_status: str | None
    percentage: float | None = None
    message: str | None = None
    form_keys: tuple[str, ...] = ()
    documents: tuple[DocumentRef, ...] = ()
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: object) -> ExecutionProgress:
        """Parse a FlowExecutionProgress; ValueError when it is not an object with an id."""
        data = _require_mapping(data, "execution progress")
        raw_status = _str_or_none(data.get("status"))
        return cls(
            id=str(data["id"]),
            status=ExecutionStatus.parse(raw_status),
            raw_status=raw_status,
            percentage=_percentage(data.get("percentage")),
            message=_str_or_none(data.get("message")),
            form_keys=form_keys(data),
            documents=tuple(find_document_refs(data.get("model"))),
            raw=data,
        )

    @property
    def prompt(self) -> str:
        """The prompt this progress waits at (:func:`prompt_key`); meaningful in ``UserInput``."""
        return prompt_key(self.raw)


@dataclass(frozen=True)
class Execution:
    """FlowExecution: the full record of an execution (``GET /flows/executions/{id}``)."""

    id: str
    status: ExecutionStatus
    raw_status: str | None
    flow_id: str | None = None
    flow_name: str | None = None
    created_at: str | None = None
    errors: tuple[FlowException, ...] = ()
    warnings: tuple[FlowException, ...] = ()
    documents: tuple[DocumentRef, ...] = ()
    #: What a ``Waiting`` execution waits for (``state.waitingFor``, one line); None when unnamed.
    waiting_for: str | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: object) -> Execution:
        """Parse a FlowExecution; ValueError when it is not an object with an id."""
        data = _require_mapping(data, "execution")
        raw_status = _str_or_none(data.get("status"))
        flow = _mapping(data.get("flow"))
        state = _mapping(data.get("state"))
        # The input data is the caller's own and may hold anything; documents are in the output.
        output_side = {key: value for key, value in state.items() if key != "inputData"}
        return cls(
            id=str(data["id"]),
            status=ExecutionStatus.parse(raw_status),
            raw_status=raw_status,
            flow_id=_str_or_none(flow.get("id")),
            flow_name=_str_or_none(flow.get("displayName")),
            created_at=_str_or_none(data.get("createdAt")),
            errors=_flow_exceptions(state.get("errors")),
            warnings=_flow_exceptions(state.get("warnings")),
            documents=tuple(find_document_refs([output_side, data.get("outputs")])),
            waiting_for=_waiting_for(state.get("waitingFor")),
            raw=data,
        )


def _waiting_for(value: object) -> str | None:
    """``state.waitingFor`` as one line: text as it is, an object as its ``key=value`` scalars
    (its shape is unconfirmed: the emulator sends ``{"type": "callback", "callbackId": ...}``)."""
    if isinstance(value, Mapping):
        value = ", ".join(
            f"{k}={v}" for k, v in value.items() if isinstance(v, (str, int, float)) and v != ""
        )
    text = " ".join(str(value).split()) if value not in (None, "", [], {}) else ""
    return text[:300] or None


def _flow_exceptions(value: object) -> tuple[FlowException, ...]:
    if value is None:
        return ()
    items = value if isinstance(value, list) else [value]
    return tuple(FlowException.from_json(item) for item in items)


def parse_datetime(value: object) -> datetime | None:
    """A wire timestamp (ISO 8601, a zone-less one taken as UTC, or epoch milliseconds) as an aware
    UTC datetime; None when missing or unreadable (:func:`~airflow_provider_smartflows.reconcile.parse_timestamp`)."""
    seconds = parse_timestamp(value)
    if seconds is None:
        return None
    try:
        return datetime.fromtimestamp(seconds, tz=timezone.utc)
    except (OverflowError, OSError, ValueError):
        return None


def _bool_or_none(value: object) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    return None


@dataclass(frozen=True)
class DocumentInfo:
    """Document metadata (``GET /documents/{id}``, the document listings); ``file_name`` is a safe
    local name. Every field but ``id`` is None when the server leaves it out (or sends something
    unreadable); timestamps are aware UTC datetimes.

    ``expiration`` is when the server's clean-up removes the document; ``finished`` False means it
    is still being written; ``post_processing`` is the server's value as it came (its shape is not
    documented).
    """

    id: str
    display_name: str | None
    content_type: str | None
    file_name: str
    created_at: datetime | None = None
    expiration: datetime | None = None
    finished: bool | None = None
    origin: str | None = None
    template_id: str | None = None
    language: str | None = None
    post_processing: Any = field(default=None, compare=False)
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: object) -> DocumentInfo:
        """Parse a Document; ValueError when it is not an object with an id."""
        data = _require_mapping(data, "document")
        document_id = str(data["id"])
        display_name = _str_or_none(data.get("displayName"))
        content_type = _str_or_none(data.get("contentType"))
        return cls(
            id=document_id,
            display_name=display_name,
            content_type=content_type,
            file_name=safe_file_name(display_name, content_type, fallback=document_id),
            created_at=parse_datetime(data.get("createdAt")),
            expiration=parse_datetime(data.get("expiration")),
            finished=_bool_or_none(data.get("finished")),
            origin=_str_or_none(data.get("origin")),
            template_id=_str_or_none(data.get("templateId")),
            language=_str_or_none(data.get("language")),
            post_processing=data.get("postProcessing"),
            raw=data,
        )


@dataclass(frozen=True)
class DownloadedDocument:
    """A document saved to storage (what the hook's ``download_document`` returns)."""

    document_id: str
    uri: str
    size: int
    sha256: str
    content_type: str | None = None


MAX_WALK_DEPTH = 200


def _walk(obj: object, max_depth: int) -> Iterator[Mapping[str, Any]]:
    """Yield every mapping in document (pre-)order, iteratively; deeper than max_depth is skipped."""
    stack: list[tuple[object, int]] = [(obj, 0)]
    while stack:
        node, depth = stack.pop()
        if depth > max_depth:
            continue
        if isinstance(node, Mapping):
            yield node
            children: list[Any] = list(node.values())
        elif isinstance(node, (list, tuple)):
            children = list(node)
        else:
            continue
        stack.extend((child, depth + 1) for child in reversed(children))


def find_document_refs(obj: object, *, max_depth: int = MAX_WALK_DEPTH) -> list[DocumentRef]:
    """Every object with ``type == "document"`` and an id anywhere in ``obj``.

    De-duplicated by id (the first one wins), in document order. The walk is iterative and
    bounded by ``max_depth``, so hostile deeply nested JSON cannot exhaust the stack.
    """
    found: dict[str, DocumentRef] = {}
    for node in _walk(obj, max_depth):
        if node.get("type") != "document":
            continue
        document_id = node.get("id")
        if isinstance(document_id, bool) or not isinstance(document_id, (str, int)) or document_id == "":
            continue
        key = str(document_id)
        if key not in found:
            found[key] = DocumentRef(id=key, display_name=_str_or_none(node.get("displayName")))
    return list(found.values())


_EXTENSIONS = {
    "application/pdf": ".pdf",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": ".docx",
    "application/msword": ".doc",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": ".xlsx",
    "text/html": ".html",
    "text/plain": ".txt",
    "application/xml": ".xml",
    "text/xml": ".xml",
    "application/zip": ".zip",
    "image/png": ".png",
    "image/jpeg": ".jpg",
}
MAX_FILE_NAME_BYTES = 200
_UNSAFE_CHARS = re.compile(r'[/\\:*?"<>|\x00-\x1f\x7f]')
_WINDOWS_RESERVED = re.compile(r"^(con|prn|aux|nul|com[0-9]|lpt[0-9])(\..*)?$", re.IGNORECASE)


def extension_for(content_type: str | None) -> str:
    """The file extension, with its dot, for a content type; "" for None, "" or an unknown type.

    Parameters after ``;`` (``charset=...``) and case are ignored. The emulator has its own
    function of that name with another contract, on purpose: it shares no code with the provider,
    so that two independent readings of the wire format catch each other's mistakes.
    """
    if not content_type:
        return ""
    mime = content_type.split(";", 1)[0].strip().lower()
    return _EXTENSIONS.get(mime) or mimetypes.guess_extension(mime) or ""


def _clean(name: str) -> str:
    name = unicodedata.normalize("NFC", name)
    # Format (Cf, e.g. right-to-left override) and other control characters can disguise names.
    name = "".join(" " if unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") else ch for ch in name)
    name = _UNSAFE_CHARS.sub("_", name)
    name = re.sub(r"\.{2,}", ".", name)
    name = re.sub(r"\s+", " ", name)
    return name.strip(" .")


def _truncate_utf8(text: str, max_bytes: int) -> str:
    encoded = text.encode("utf-8")
    if len(encoded) <= max_bytes:
        return text
    return encoded[:max_bytes].decode("utf-8", errors="ignore").rstrip(" .")


def safe_file_name(
    display_name: str | None, content_type: str | None, *, fallback: str, max_bytes: int = MAX_FILE_NAME_BYTES
) -> str:
    """A local file name from a server-given display name that cannot leave its folder.

    No path separators, no "..", no control characters, at most ``max_bytes`` UTF-8 bytes,
    and the extension of ``content_type`` (unless the name already ends with it).
    """
    extension = extension_for(content_type)
    stem = _clean(display_name or "") or _clean(fallback) or "document"
    if extension and stem.lower().endswith(extension):
        stem = stem[: -len(extension)].rstrip(" .") or _clean(fallback) or "document"
    if _WINDOWS_RESERVED.match(stem):
        stem = f"_{stem}"
    stem = _truncate_utf8(stem, max_bytes - len(extension.encode("utf-8"))) or "document"
    return f"{stem}{extension}"

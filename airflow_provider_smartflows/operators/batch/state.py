"""A batch's durable progress: the checkpoint object and the results manifest, next to each other.

For a manifest ``<m>`` (e.g. ``s3://bucket/invoices/2025-01-31/manifest.jsonl``):

- ``<m>.checkpoint.json``: where reading stopped, the records in flight (at most ``max_active``:
  pending, being started, running with their execution id), the counters, and the manifest lines
  not yet flushed (at most :data:`PART_LINES`). Its size does not grow with the batch.
- ``<m>.parts/00001.jsonl`` ...: the manifest lines, flushed :data:`PART_LINES` at a time. A part
  is written before the checkpoint that counts it, so a crash in between rewrites the same part.
- ``<m>``: the manifest, one JSON line per record, assembled from the parts when the batch ends.

Starting is write-ahead: the checkpoint records the intent (state ``starting``) before the start
requests of a wave, and their execution ids right after. A record found ``starting`` on resume may
or may not have an execution: it is reconciled (:mod:`.reconcile`), never started again blindly.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from airflow_provider_smartflows.exceptions import SmartFlowsError, SmartFlowsInputError
from airflow_provider_smartflows.operators.batch.records import Cursor, Record
from airflow_provider_smartflows.storage import object_path

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import ObjectStoragePath

#: Manifest lines kept in the checkpoint before they are written out as one part.
PART_LINES = 100
FORMAT = 1

PENDING = "pending"
STARTING = "starting"
RUNNING = "running"

SUCCEEDED = "succeeded"
FAILED = "failed"
UNKNOWN = "unknown"


@dataclass
class Entry:
    """A record in flight: taken from the source, not yet in the manifest."""

    line: int
    key: str
    record: Any
    state: str = PENDING
    attempt: int = 1
    execution_id: str | None = None
    intent_at: float | None = None
    #: A listing proved that an ambiguous start created nothing, and the record was queued again:
    #: a further ambiguous start makes it ``unknown`` (at most one start again per record).
    restarted: bool = False
    #: Earlier attempts: ``{"execution_id", "execution_status", "messages"}`` each.
    previous: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def taken(cls, record: Record) -> Entry:
        """A keyed record just read from the source, waiting to be started."""
        return cls(line=record.line, key=record.key, record=record.value)

    def as_record(self) -> Record:
        """The record this entry carries (to render its input or its documents' names again)."""
        return Record(self.line, self.record, self.key)


@dataclass
class BatchState:
    """Everything a resume needs, JSON-safe, bounded by ``max_active`` and :data:`PART_LINES`."""

    owner: dict[str, Any]
    flow_id: str | None
    total: int
    started_at: float
    cursor: Cursor = field(default_factory=Cursor)
    exhausted: bool = False
    entries: list[Entry] = field(default_factory=list)
    counts: dict[str, int] = field(
        default_factory=lambda: {SUCCEEDED: 0, FAILED: 0, UNKNOWN: 0, "executions": 0, "documents": 0}
    )
    parts: int = 0
    buffer: list[dict[str, Any]] = field(default_factory=list)
    backoff: float = 0.0
    backoff_until: float | None = None
    worker_seconds: float = 0.0
    #: The current try's deadline (epoch seconds) and the try it belongs to.
    deadline: float | None = None
    deadline_try: int | None = None
    resumes: int = 0
    complete: bool = False

    @property
    def done(self) -> int:
        return self.counts[SUCCEEDED] + self.counts[FAILED] + self.counts[UNKNOWN]

    def running(self) -> list[Entry]:
        return [entry for entry in self.entries if entry.state == RUNNING]

    def progress_line(self) -> str:
        """``1,234 / 10,000 done, 12 failed, 10 running`` (failed counts the unknown ones too)."""
        failed = self.counts[FAILED] + self.counts[UNKNOWN]
        return f"{self.done:,} / {self.total:,} done, {failed:,} failed, {len(self.running()):,} running"

    def close(self, entry: Entry, status: str, **fields: Any) -> None:
        """The record is done: out of the entries, its manifest line (:func:`manifest_line` with
        ``fields``) counted and kept for the next part."""
        self.entries.remove(entry)
        self.add_result(manifest_line(entry, status, **fields))

    def add_result(self, line: dict[str, Any]) -> None:
        """Count a record's final manifest line and keep it for the next part."""
        self.counts[line["status"]] += 1
        self.counts["documents"] += len(line.get("documents") or [])
        skipped = len(line.get("skipped_documents") or [])
        if skipped:  # a checkpoint written before this count has no such key
            self.counts["skipped_documents"] = self.counts.get("skipped_documents", 0) + skipped
        self.buffer.append(line)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["cursor"] = self.cursor.to_json()
        data["format"] = FORMAT
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> BatchState:
        data = dict(data)
        if data.pop("format", None) != FORMAT:
            raise SmartFlowsError("The batch checkpoint has an unknown format; remove it to start over.")
        data["cursor"] = Cursor.from_json(data["cursor"])
        data["entries"] = [Entry(**entry) for entry in data["entries"]]
        return cls(**data)


def manifest_line(entry: Entry, status: str, **fields: Any) -> dict[str, Any]:
    """One manifest line: key, line, status, execution id and status, messages, documents, attempts."""
    line = {
        "key": entry.key,
        "line": entry.line,
        "status": status,
        "execution_id": entry.execution_id,
        "execution_status": None,
        "messages": [],
        "documents": [],
        "attempts": entry.attempt,
        "previous_attempts": list(entry.previous),
    }
    line.update(fields)
    return line


class BatchStore:
    """Reads and writes a batch's checkpoint, manifest parts and manifest (any ObjectStoragePath)."""

    def __init__(self, manifest_uri: str, conn_id: str | None) -> None:
        text = str(manifest_uri).strip()
        if not text or text.endswith("/"):
            raise SmartFlowsInputError(
                f"manifest_uri must name an object (e.g. s3://bucket/batch/manifest.jsonl), not {text!r}."
            )
        self.conn_id = conn_id
        self.manifest = self._path(text)
        self.checkpoint = self._path(text + ".checkpoint.json")
        self.parts_folder = self._path(text + ".parts")

    def _path(self, uri: str) -> ObjectStoragePath:
        return object_path(uri, self.conn_id)

    @property
    def manifest_uri(self) -> str:
        return str(self.manifest)

    def _part(self, number: int) -> ObjectStoragePath:
        return self.parts_folder / f"{number:05d}.jsonl"

    def _write(self, path: ObjectStoragePath, data: bytes) -> None:
        """Write ``data`` whole: local files through a temporary sibling and a rename."""
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.protocol not in ("file", "local"):
            with path.open("wb") as sink:  # object stores replace an object atomically
                sink.write(data)
            return
        temporary = path.parent / f".smartflows-{uuid.uuid4().hex}.part"
        with temporary.open("wb") as sink:
            sink.write(data)
        temporary.fs.mv(temporary.path, path.path)

    def load(self) -> BatchState | None:
        """The checkpoint, or None when there is none yet."""
        try:
            if not self.checkpoint.exists():
                return None
            text = self.checkpoint.read_text(encoding="utf-8")
        except Exception as err:  # storage errors: name the object and the connection
            raise SmartFlowsError(
                f"Cannot read the batch checkpoint {self.checkpoint} (connection {self.conn_id or 'none'}): "
                f"{type(err).__name__}: {err}."
            ) from err
        try:
            return BatchState.from_json(json.loads(text))
        except (ValueError, TypeError, KeyError) as err:
            raise SmartFlowsError(
                f"The batch checkpoint {self.checkpoint} is damaged ({err}); it lists the records in "
                "flight: check them in Smart Flows, then remove the checkpoint to start the batch over."
            ) from None

    def save(self, state: BatchState) -> None:
        """Flush a full buffer as a part, then write the checkpoint (in that order)."""
        if len(state.buffer) >= PART_LINES:
            self._write(self._part(state.parts + 1), _jsonl(state.buffer))
            state.parts += 1
            state.buffer = []
        self._write(self.checkpoint, json.dumps(state.to_json(), separators=(",", ":")).encode("utf-8"))

    def finish(self, state: BatchState) -> None:
        """Assemble the manifest from the parts and the buffer; mark the checkpoint complete."""
        self.manifest.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.manifest.parent / f".smartflows-{uuid.uuid4().hex}.part"
        local = self.manifest.protocol in ("file", "local")
        with (temporary if local else self.manifest).open("wb") as sink:
            for number in range(1, state.parts + 1):
                with self._part(number).open("rb") as part:
                    while chunk := part.read(1024 * 1024):
                        sink.write(chunk)
            sink.write(_jsonl(state.buffer))
        if local:
            temporary.fs.mv(temporary.path, self.manifest.path)
        state.complete = True
        state.buffer = []
        self._write(self.checkpoint, json.dumps(state.to_json(), separators=(",", ":")).encode("utf-8"))
        for number in range(1, state.parts + 1):
            try:
                self._part(number).unlink()
            except Exception:  # the manifest is complete; leftover parts are harmless
                break


def _jsonl(lines: list[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(line, separators=(",", ":")).encode("utf-8") + b"\n" for line in lines)

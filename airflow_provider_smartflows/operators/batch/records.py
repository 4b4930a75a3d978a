"""The records of a batch: where they come from, how one becomes a flow's input, key and file names.

Records are read one at a time and never all held: from a list (templated, or an XCom), or
streamed line by line from a JSON Lines or CSV object in storage (``ObjectStoragePath``). Every
record has a ``line``: its item number in a list, its line number in a JSON Lines object, the line
its row starts on in a CSV object (the header is line 1). A reading position (:class:`Cursor`)
is small and JSON-safe, so a batch resumes where it stopped: a list by index, an object by byte
offset (one seek, not a re-read).

Every error is a :class:`SmartFlowsInputError` naming the line, raised before anything is started
for that record; the batch adds what it had started (:func:`started_before`).
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from string import Formatter
from typing import TYPE_CHECKING, Any

from airflow_provider_smartflows.exceptions import SmartFlowsInputError
from airflow_provider_smartflows.hooks.inputs import prepare_start_body
from airflow_provider_smartflows.storage import object_path

if TYPE_CHECKING:
    from collections.abc import Callable

JSONL_SUFFIXES = (".jsonl", ".ndjson", ".jsonl.txt")
CSV_SUFFIXES = (".csv",)
_UNSAFE_NAME = re.compile(r"[\x00-\x1f\x7f/\\]|\.\.")
_WHOLE_FIELD = re.compile(r"\{record\[([^\[\]{}]+)\]\}")


class RecordList:
    """A literal list of records, kept out of Airflow's template rendering.

    Airflow renders every string of a templated list as a Jinja template, each time the task starts
    or resumes: for thousands of records that is most of a resume's time. Records are data.
    """

    def __init__(self, items: list[Any] | tuple[Any, ...]) -> None:
        self.items = list(items)

    def __len__(self) -> int:
        return len(self.items)

    def __repr__(self) -> str:
        return f"<{len(self.items):,} records>"


@dataclass(frozen=True)
class Record:
    """One record: its line (item number for a list), its key, and its value (usually a dict)."""

    line: int
    value: Any
    key: str = ""


@dataclass
class Cursor:
    """Where reading resumes: the next byte offset (objects) or item index (lists), and the line."""

    offset: int = 0
    line: int = 0
    header: list[str] | None = None

    def to_json(self) -> dict[str, Any]:
        return {"offset": self.offset, "line": self.line, "header": self.header}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Cursor:
        return cls(int(data["offset"]), int(data["line"]), data.get("header"))


@dataclass
class RecordSource:
    """
    A batch's records: ``records`` (a list) or ``uri`` (a JSON Lines or CSV object).

    :param records: the records themselves (a list, or JSON text of one as a template renders it).
    :param uri: an object-storage URI of a JSON Lines (``.jsonl``/``.ndjson``) or CSV (``.csv``) file.
    :param conn_id: the storage connection of ``uri``.
    :param fmt: ``"jsonl"`` or ``"csv"``; None takes it from the URI's suffix.
    """

    records: Any = None
    uri: str | None = None
    conn_id: str | None = None
    fmt: str | None = None
    _items: list[Any] | None = field(default=None, init=False, repr=False)

    def describe(self) -> str:
        return f"records object {self.uri}" if self.uri else "records list"

    @property
    def kind(self) -> str:
        if not self.uri:
            return "list"
        if self.fmt:
            if self.fmt not in ("jsonl", "csv"):
                raise SmartFlowsInputError(f"records_format must be 'jsonl' or 'csv', not {self.fmt!r}.")
            return self.fmt
        name = self.uri.lower().rstrip("/")
        if name.endswith(JSONL_SUFFIXES):
            return "jsonl"
        if name.endswith(CSV_SUFFIXES):
            return "csv"
        raise SmartFlowsInputError(
            f"Cannot tell the format of the records object {self.uri}: name it .jsonl/.ndjson/.csv "
            "or pass records_format='jsonl' or 'csv'."
        )

    def read(self, cursor: Cursor) -> Iterator[tuple[Record, Cursor]]:
        """Records from ``cursor`` on, each with the cursor just after it."""
        kind = self.kind
        if kind == "list":
            return self._read_list(cursor)
        return self._read_object(cursor, kind)

    def _list(self) -> list[Any]:
        if self._items is None:
            items = self.records
            if isinstance(items, RecordList):
                items = items.items
            if isinstance(items, (str, bytes)):
                try:
                    items = json.loads(items)
                except ValueError as err:
                    raise SmartFlowsInputError(f"records is text but not a JSON list: {err}") from None
            if isinstance(items, Mapping) or not isinstance(items, (list, tuple)):
                raise SmartFlowsInputError(
                    f"records must be a list (or records_uri an object), not {type(items).__name__}."
                )
            self._items = list(items)
        return self._items

    def _read_list(self, cursor: Cursor) -> Iterator[tuple[Record, Cursor]]:
        items = self._list()
        for index in range(cursor.offset, len(items)):
            yield Record(index + 1, items[index]), Cursor(index + 1, index + 1)

    def _open(self) -> Any:
        try:
            return object_path(str(self.uri), self.conn_id).open("rb")
        except Exception as err:  # any storage failure: say which object and connection
            raise SmartFlowsInputError(
                f"Cannot read the records object {self.uri} (connection {self.conn_id or 'none'}): "
                f"{type(err).__name__}: {err}. Check the URI and the storage connection."
            ) from err

    def _read_object(self, cursor: Cursor, kind: str) -> Iterator[tuple[Record, Cursor]]:
        handle = self._open()
        try:
            if cursor.offset:
                handle.seek(cursor.offset)
            lines = _LineReader(handle, cursor.offset, cursor.line, self.uri or "")
            if kind == "jsonl":
                yield from _jsonl_records(lines)
            else:
                yield from _csv_records(lines, cursor.header)
        finally:
            handle.close()


class _LineReader:
    """Decoded lines of a binary file, counting lines and the bytes consumed (the resume offset)."""

    def __init__(self, handle: Any, offset: int, line: int, uri: str) -> None:
        self.handle = handle
        self.offset = offset
        self.line = line
        self.uri = uri

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        try:
            raw = self.handle.readline()
        except Exception as err:
            raise SmartFlowsInputError(
                f"Reading the records object {self.uri} failed after line {self.line}: "
                f"{type(err).__name__}: {err}."
            ) from err
        if not raw:
            raise StopIteration
        self.offset += len(raw)
        self.line += 1
        if self.line == 1 and raw.startswith(b"\xef\xbb\xbf"):
            raw = raw[3:]
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as err:
            raise SmartFlowsInputError(f"Line {self.line} of {self.uri} is not UTF-8: {err}.") from None

    def cursor(self, header: list[str] | None = None) -> Cursor:
        return Cursor(self.offset, self.line, header)


def _jsonl_records(lines: _LineReader) -> Iterator[tuple[Record, Cursor]]:
    for text in lines:
        if not text.strip():
            continue
        try:
            value = json.loads(text)
        except ValueError as err:
            raise SmartFlowsInputError(
                f"Line {lines.line} of {lines.uri} is not valid JSON ({_json_problem(err)}); fix the line."
            ) from None
        if not isinstance(value, dict):
            raise SmartFlowsInputError(
                f"Line {lines.line} of {lines.uri} is a JSON {type(value).__name__}, not an object."
            )
        yield Record(lines.line, value), lines.cursor()


def _json_problem(err: ValueError) -> str:
    """What is wrong in a line, placed by column only: the line number is the object's, not the
    decoder's (which counts the line's own newline: "line 2 column 1")."""
    if not isinstance(err, json.JSONDecodeError):
        return str(err)
    where = f"at column {err.colno}" if err.lineno == 1 else "at the end of the line"
    return f"{err.msg} {where}"


def started_before(err: SmartFlowsInputError, started: int) -> SmartFlowsInputError:
    """``err`` saying what the batch had started when the record was found bad."""
    if started == 0:
        note = "Nothing at all was started: every record is checked before the first start."
    else:
        note = (
            f"{started} record{'s were' if started != 1 else ' was'} started before it; "
            "nothing was started for this one."
        )
    return SmartFlowsInputError(f"{err.message} {note}", **err.fields())


def _csv_records(lines: _LineReader, header: list[str] | None) -> Iterator[tuple[Record, Cursor]]:
    reader = csv.reader(lines, strict=True)
    try:
        if header is None:
            header = next(reader, None)
            if not header:
                raise SmartFlowsInputError(f"The CSV object {lines.uri} has no header line.")
        while True:
            start = lines.line + 1
            row = next(reader, None)
            if row is None:
                return
            if not any(cell.strip() for cell in row):
                continue
            if len(row) != len(header):
                raise SmartFlowsInputError(
                    f"Line {start} of {lines.uri} has {len(row)} fields, the header {len(header)}."
                )
            yield Record(start, dict(zip(header, row, strict=True))), lines.cursor(header)
    except csv.Error as err:
        raise SmartFlowsInputError(f"Line {lines.line} of {lines.uri} is not valid CSV: {err}.") from None


# --- a record's key, input and file names ----------------------------------------------------


class KeySet:
    """The record keys seen so far, as 8-byte digests (100,000 keys: a few MiB): a key seen twice is
    refused, since two records with one key would write the same files and manifest key."""

    def __init__(self) -> None:
        self._seen: set[bytes] = set()

    def add(self, record: Record, source: RecordSource, key_field: str | None) -> None:
        digest = hashlib.blake2b(record.key.encode("utf-8"), digest_size=8).digest()
        if digest not in self._seen:
            self._seen.add(digest)
            return
        earlier = (r for r, _ in source.read(Cursor()) if r.line < record.line)
        first = next((r.line for r in earlier if record_key(r, key_field) == record.key), None)
        if first is None:  # two keys with one digest: as rare as it gets, and not a duplicate
            return
        raise SmartFlowsInputError(
            f"Line {record.line}: the record key {record.key!r} is also the key of line {first}. Keys name "
            "each record's manifest line and files: choose a unique record_key field, or record_key=None "
            "for line numbers."
        )


def record_key(record: Record, key_field: str | None) -> str:
    """The record's key: ``key_field`` of the record, else its line number."""
    if not key_field:
        return str(record.line)
    value = record.value.get(key_field) if isinstance(record.value, Mapping) else None
    if value is None or isinstance(value, (dict, list)) or str(value) == "":
        raise SmartFlowsInputError(
            f"Line {record.line}: the record has no usable '{key_field}' (record_key) field: "
            f"{_fields(record.value)}."
        )
    return str(value)


def _fields(value: Any) -> str:
    if isinstance(value, Mapping):
        return "its fields are " + (", ".join(map(str, list(value)[:20])) or "none")
    return f"it is a {type(value).__name__}"


def format_template(template: str, record: Record, what: str, *, safe: bool = False) -> str:
    """``template`` with ``{record[field]}``, ``{key}`` and ``{line}`` filled in from the record.

    ``safe`` makes the filled-in values file-name safe (no separators, ``..`` or control characters).
    """
    value: Any = _SafeValue(record.value) if safe else record.value
    key = _safe_text(record.key) if safe else record.key
    try:
        return Formatter().vformat(template, (), {"record": value, "key": key, "line": record.line})
    except KeyError as err:
        raise SmartFlowsInputError(
            f"Line {record.line}: {what} {template!r} needs the field {err.args[0]!r}, which the "
            f"record lacks ({_fields(record.value)})."
        ) from None
    except (IndexError, AttributeError, ValueError, TypeError) as err:
        raise SmartFlowsInputError(
            f"Line {record.line}: {what} {template!r} cannot be filled in: {err}."
        ) from None


def _safe_text(value: object) -> str:
    return _UNSAFE_NAME.sub("_", str(value)).strip() or "_"


class _SafeValue:
    """A record seen through a name template: every field value made file-name safe."""

    def __init__(self, value: Any) -> None:
        self.value = value

    def __getitem__(self, name: str) -> str:
        if not isinstance(self.value, Mapping):
            raise KeyError(name)
        return _safe_text(self.value[name])

    def __format__(self, spec: str) -> str:
        return format(_safe_text(self.value), spec)


def fill_data_template(template: Any, record: Record) -> Any:
    """A mapping template with every string filled in from the record (recursively).

    A string that is exactly one ``{record[field]}`` takes the field's value as it is (a list
    stays a list); any other string is formatted as text.
    """
    if isinstance(template, str):
        whole = _WHOLE_FIELD.fullmatch(template)
        if whole and isinstance(record.value, Mapping):
            name = whole.group(1)
            if name not in record.value:
                raise SmartFlowsInputError(
                    f"Line {record.line}: data_template needs the field {name!r}, which the record "
                    f"lacks ({_fields(record.value)})."
                )
            return record.value[name]
        return format_template(template, record, "data_template")
    if isinstance(template, Mapping):
        return {key: fill_data_template(value, record) for key, value in template.items()}
    if isinstance(template, (list, tuple)):
        return [fill_data_template(value, record) for value in template]
    return template


def render_xml(render: Callable[[dict[str, Any]], str], record: Record) -> str:
    """The XML of one record from a compiled Jinja template (``record``, ``key``, ``line`` in scope)."""
    from jinja2 import TemplateError, UndefinedError

    try:
        return render({"record": record.value, "key": record.key, "line": record.line})
    except UndefinedError as err:
        raise SmartFlowsInputError(
            f"Line {record.line}: the XML template uses something the record lacks ({err.message}; "
            f"{_fields(record.value)})."
        ) from None
    except TemplateError as err:
        raise SmartFlowsInputError(f"Line {record.line}: the XML template failed: {err}.") from None


@dataclass(frozen=True)
class RecordInput:
    """
    How a record becomes its execution's flow input: its key, then the input (the record itself,
    ``data_template`` filled in, or XML rendered), checked by the start call's own rules.

    :param flow_id: the flow the input is for.
    :param key_field: the record's key field (``record_key``); None: the line number.
    :param data_template: a mapping filled in per record (:func:`fill_data_template`).
    :param xml: a compiled XML template's ``render`` (:func:`render_xml`); None: no XML input.
    :param destination: the documents' destination template, checked to fill in per record.
    """

    flow_id: str
    key_field: str | None = None
    data_template: Any = None
    xml: Callable[[dict[str, Any]], str] | None = None
    destination: str | None = None

    def keyed(self, record: Record) -> Record:
        """The record with its key (``key_field``, else its line number)."""
        return Record(record.line, record.value, record_key(record, self.key_field or None))

    def flow_input(self, record: Record) -> Any:
        """The record's flow input, checked by the start call's own rules; errors name the line."""
        if self.xml is not None:
            data: Any = render_xml(self.xml, record)
        elif self.data_template is not None:
            data = fill_data_template(self.data_template, record)
        else:
            data = record.value
        try:
            prepare_start_body(data, self.flow_id)
        except SmartFlowsInputError as err:
            raise SmartFlowsInputError(f"Line {record.line} (record {record.key}): {err}") from None
        if self.destination:
            format_template(str(self.destination), record, "destination", safe=True)
        return data
